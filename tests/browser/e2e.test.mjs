// End-to-end tests of the demo board: the real binary, real Redis where needed, and two
// browser contexts in headless Chromium driven by playwright-core.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.BOARDCAST_BIN || join(here, "../../target/debug/boardcast");
const SECRET = "e2e-secret-0123456789abcdef";
const SHOTS = join(here, "screenshots");
const WAIT = 15000;

let browser;
const cleanups = [];

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
});

after(async () => {
  await browser?.close();
  for (const clean of cleanups.reverse()) await clean();
});

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

function waitExit(child) {
  return new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once("exit", resolve)));
}

/** Starts the boardcast binary; resolves with its port once it listens. */
async function startServer(env = {}) {
  let dataDir = env.DATA_DIR;
  if (!dataDir) {
    dataDir = mkdtempSync(join(tmpdir(), "boardcast-e2e-data-"));
    cleanups.push(async () => rmSync(dataDir, { recursive: true, force: true }));
  }
  const child = spawn(BIN, [], {
    env: { ...process.env, BIND: "127.0.0.1:0", RUST_LOG: "info", DATA_DIR: dataDir, ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the server did not report its port")), WAIT);
    let log = "";
    child.stderr.on("data", (chunk) => {
      log += chunk;
      const m = /listening on port (\d+)/.exec(log);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    child.once("exit", (code) => reject(new Error(`the server exited (${code}): ${log}`)));
  });
  const server = { child, port, stop: async () => { child.kill("SIGTERM"); await waitExit(child); } };
  cleanups.push(async () => { child.kill("SIGKILL"); await waitExit(child); });
  return server;
}

/** Starts a redis-server of the test's own on a free port. */
async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "boardcast-e2e-redis-"));
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--dir", dir], { stdio: "ignore" });
  cleanups.push(async () => { child.kill("SIGKILL"); await waitExit(child); rmSync(dir, { recursive: true, force: true }); });
  const deadline = Date.now() + WAIT;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const sock = new Socket();
      sock.once("error", () => resolve(false));
      sock.connect(port, "127.0.0.1", () => { sock.write("PING\r\n"); });
      sock.once("data", (d) => { sock.destroy(); resolve(String(d).startsWith("+PONG")); });
    });
    if (ok) return `redis://127.0.0.1:${port}/`;
    if (Date.now() > deadline) throw new Error("redis-server did not start");
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function waitReady(port) {
  const deadline = Date.now() + WAIT;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("never ready");
}

/** An HS256 JWT signed with the test secret. */
function jwt(sub, name, role = "editor") {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, name, role, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

/** Opens the demo board in a fresh browser context (a user of its own). */
async function openBoard(port, board, token, query = "") {
  const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  const hash = token ? `#token=${token}` : "";
  await page.goto(`http://127.0.0.1:${port}/?board=${board}${query}${hash}`);
  await page.waitForFunction(() => ["connected", "resumed"].includes(document.getElementById("badge").textContent), null, { timeout: WAIT });
  return page;
}

const userIds = (page) => page.$$eval("#users span", (spans) => spans.map((s) => s.dataset.user).sort());
const selfId = (page) => page.evaluate(() => window.board.state.self.userId);
const noteCount = (page) => page.$$eval(".note", (n) => n.length);

async function addNote(page) {
  const before = await noteCount(page);
  await page.click("#add");
  await page.waitForFunction((n) => document.querySelectorAll(".note").length === n + 1, before, { timeout: WAIT });
  return page.$eval(".note:last-of-type", (el) => el.dataset.id);
}

test("without a token the page says how to get one", async () => {
  const server = await startServer({ JWT_SECRET: SECRET });
  const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
  const page = await context.newPage();
  await page.goto(`http://127.0.0.1:${server.port}/?board=e2e-notoken`);
  await page.waitForSelector("#error:not([hidden])", { timeout: WAIT });
  assert.match(await page.textContent("#error"), /#token=JWT/);
  const favicon = await fetch(`http://127.0.0.1:${server.port}/favicon.ico`);
  assert.ok(favicon.ok, `favicon: ${favicon.status}`);
  await page.screenshot({ path: join(SHOTS, "no-token.png") });
  await context.close();
});

test("notes show their title, names are shown, and cursors from the snapshot are drawn", async () => {
  const server = await startServer({ JWT_SECRET: SECRET });
  const serverToken = jwt("backend", "Backend", "server");
  const created = await fetch(`http://127.0.0.1:${server.port}/api/boards/e2e-title/events`, {
    method: "POST",
    headers: { authorization: `Bearer ${serverToken}`, "content-type": "application/json" },
    body: JSON.stringify({ type: "item.created", payload: { item: { id: "n1", title: "from the backend", position: { x: 50, y: 50 } } } }),
  });
  assert.equal(created.status, 202);
  const a = await openBoard(server.port, "e2e-title", jwt("ann", "Ann"));
  await a.waitForFunction(() => document.querySelector(".note .title")?.textContent === "from the backend", null, { timeout: WAIT });
  assert.equal(await a.textContent("#me"), "Ann", "the own badge shows the name");
  // Ann's cursor is on the board before Bob arrives: Bob's snapshot draws it at once.
  await a.mouse.move(300, 300);
  await a.waitForFunction(() => window.board.state.users.get("ann")?.cursor !== undefined, null, { timeout: WAIT });
  await new Promise((r) => setTimeout(r, 300));
  const b = await openBoard(server.port, "e2e-title", jwt("bob", "Bob"));
  await b.waitForFunction(() => document.querySelector('.cursor[data-user="ann"]')?.textContent === "Ann", null, { timeout: WAIT });
  // The cursor is a pointer arrow in Ann's color with her name on a tag of that color.
  const annColor = await b.evaluate(() => window.board.state.users.get("ann").color);
  assert.equal(await b.$eval('.cursor[data-user="ann"] svg path', (p) => p.getAttribute("fill")), annColor);
  assert.equal(await b.$eval('.cursor[data-user="ann"] .tag', (t) => t.textContent), "Ann");
  // Avatars: initials in each user's color, and how many are online.
  await b.waitForFunction(() => document.getElementById("online").textContent === "2 online", null, { timeout: WAIT });
  const avatars = await b.$$eval("#users .avatar", (els) => els.map((e) => [e.dataset.user, e.textContent, e.title]).sort());
  assert.deepEqual(avatars, [["ann", "A", "Ann"], ["bob", "B", "Bob"]]);
  await b.mouse.move(500, 350);
  await a.waitForSelector('.cursor[data-user="bob"] .tag', { timeout: WAIT });
  await b.screenshot({ path: join(SHOTS, "title-and-snapshot-cursor.png") });
});

test("idle users are dimmed, the share link names the board, and the board works on a phone", async () => {
  const server = await startServer({ JWT_SECRET: SECRET });
  // Ann's tab counts as idle after a second without input.
  const desk = await openBoard(server.port, "e2e-phone&idle=1", jwt("ann", "Ann Lee"));
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const phone = await context.newPage();
  phone.on("pageerror", (e) => console.error("page error:", e.message));
  await phone.goto(`http://127.0.0.1:${server.port}/?board=e2e-phone#token=${jwt("bob", "Bob")}`);
  await phone.waitForFunction(() => document.getElementById("online").textContent === "2 online", null, { timeout: WAIT });
  assert.equal(await phone.$eval('#users .avatar[data-user="ann"]', (e) => e.textContent), "AL");
  // Ann goes idle: Bob sees her avatar dimmed; she moves, and it is not.
  await phone.waitForSelector('#users .avatar.idle[data-user="ann"]', { timeout: WAIT });
  await desk.mouse.move(200, 200);
  await phone.waitForSelector('#users .avatar:not(.idle)[data-user="ann"]', { timeout: WAIT });
  // The share link is the board's address, without anyone's token.
  await phone.tap("#share");
  const link = await phone.$eval("#share-link", (el) => (el.hidden ? "" : el.value));
  assert.equal(link, `http://127.0.0.1:${server.port}/?board=e2e-phone`);
  // Nothing runs off a phone's width, and a note added there reaches the desk.
  assert.ok(await phone.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), "no sideways scroll");
  await phone.tap("#add");
  await desk.waitForFunction(() => document.querySelectorAll(".note").length === 1, null, { timeout: WAIT });
  await phone.screenshot({ path: join(SHOTS, "phone.png") });
  await context.close();
});

test("two users see each other, cursors, and notes added and dragged", async () => {
  const server = await startServer();
  const a = await openBoard(server.port, "e2e");
  const b = await openBoard(server.port, "e2e");
  const [ann, bob] = [await selfId(a), await selfId(b)];
  for (const page of [a, b]) {
    await page.waitForFunction(() => document.querySelectorAll("#users span").length === 2, null, { timeout: WAIT });
    assert.deepEqual(await userIds(page), [ann, bob].sort());
  }
  const colors = await a.$$eval("#users span", (spans) => spans.map((s) => s.style.background));
  assert.notEqual(colors[0], colors[1], "different colors");

  // A mouse move in a shows a's named cursor in b.
  await a.mouse.move(300, 250);
  await a.mouse.move(320, 260, { steps: 3 });
  const cursor = await b.waitForSelector(`.cursor[data-user="${ann}"]`, { timeout: WAIT });
  assert.equal(await cursor.textContent(), ann);

  // A note added in a appears in b; dragged in a, it moves in b.
  const id = await addNote(a);
  await b.waitForSelector(`.note[data-id="${id}"]`, { timeout: WAIT });
  const grip = await a.$(`.note[data-id="${id}"] .grip`);
  const box = await grip.boundingBox();
  await a.mouse.move(box.x + 20, box.y + 5);
  await a.mouse.down();
  await a.mouse.move(box.x + 220, box.y + 105, { steps: 8 });
  await a.mouse.up();
  const target = await a.$eval(`.note[data-id="${id}"]`, (el) => ({ x: el.offsetLeft, y: el.offsetTop }));
  await b.waitForFunction(({ id, x, y }) => {
    const el = document.querySelector(`.note[data-id="${id}"]`);
    return el && el.offsetLeft === x && el.offsetTop === y;
  }, { id, ...target }, { timeout: WAIT });

  await a.screenshot({ path: join(SHOTS, "tab-a.png") });
  await b.screenshot({ path: join(SHOTS, "tab-b.png") });
  await server.stop();
});

test("a MessagePack tab and a JSON tab share a board", async () => {
  const server = await startServer();
  const packed = await openBoard(server.port, "e2e-mixed", undefined, "&encoding=msgpack");
  const plain = await openBoard(server.port, "e2e-mixed");
  const wire = (page) => page.evaluate(() => ({ protocol: window.board.socket.protocol, binaryType: window.board.socket.binaryType }));
  assert.deepEqual(await wire(packed), { protocol: "boardcast.v1.msgpack", binaryType: "arraybuffer" });
  assert.equal((await wire(plain)).protocol, "");
  const [p, j] = [await selfId(packed), await selfId(plain)];
  for (const page of [packed, plain]) {
    await page.waitForFunction(() => document.querySelectorAll("#users span").length === 2, null, { timeout: WAIT });
    assert.deepEqual(await userIds(page), [p, j].sort());
  }
  // A cursor and a note from the MessagePack tab reach the JSON tab...
  await packed.mouse.move(300, 250);
  await packed.mouse.move(330, 270, { steps: 3 });
  await plain.waitForSelector(`.cursor[data-user="${p}"]`, { timeout: WAIT });
  const id = await addNote(packed);
  await plain.waitForSelector(`.note[data-id="${id}"]`, { timeout: WAIT });
  // ...and an edit in the JSON tab reaches the MessagePack tab, at the same seq in both.
  await plain.fill(`.note[data-id="${id}"] textarea`, "from json");
  await packed.waitForFunction((id) => document.querySelector(`.note[data-id="${id}"] textarea`).value === "from json", id, { timeout: WAIT });
  await plain.waitForFunction(() => window.board.pending.length === 0, null, { timeout: WAIT });
  const seqs = await Promise.all([packed, plain].map((page) => page.evaluate(() => window.board.state.seq)));
  assert.equal(seqs[0], seqs[1]);
  assert.ok(seqs[0] >= 2, `seq ${seqs[0]}`);
  await server.stop();
});

test("a conflicting edit rolls back in the losing tab", async () => {
  const server = await startServer();
  const a = await openBoard(server.port, "conflict");
  const b = await openBoard(server.port, "conflict");
  const id = await addNote(a);
  await b.waitForSelector(`.note[data-id="${id}"]`, { timeout: WAIT });
  await a.fill(`.note[data-id="${id}"] textarea`, "winner");
  await b.waitForFunction((id) => document.querySelector(`.note[data-id="${id}"] textarea`).value === "winner", id, { timeout: WAIT });
  // b edits with the version it had before a's edit: the server refuses it.
  const outcome = await b.evaluate(async (id) => {
    const done = window.board.setValue(id, "text", "loser", { expectedVersion: 0 });
    const shown = document.querySelector(`.note[data-id="${id}"] textarea`).value;
    const result = await done.then(() => "accepted", (e) => e.code);
    return { shown, result };
  }, id);
  assert.deepEqual(outcome, { shown: "loser", result: "conflict" }, "applied at once, then refused");
  const after = await b.$eval(`.note[data-id="${id}"] textarea`, (t) => t.value);
  assert.equal(after, "winner", "rolled back to the server's value");
  await server.stop();
});

test("a server restart is survived: the page resumes and no note is lost", async () => {
  const redis = await startRedis();
  const port = await freePort();
  const env = { REDIS_URL: redis, JWT_SECRET: SECRET, BIND: `127.0.0.1:${port}` };
  let server = await startServer(env);
  await waitReady(port);
  const a = await openBoard(port, "restart", jwt("ann", "Ann"));
  const b = await openBoard(port, "restart", jwt("bob", "Bob"));
  await addNote(a);
  await addNote(a);
  await b.waitForFunction(() => document.querySelectorAll(".note").length === 2, null, { timeout: WAIT });
  await server.stop();
  server = await startServer(env);
  for (const page of [a, b]) {
    await page.waitForFunction(() => document.getElementById("badge").textContent === "resumed", null, { timeout: 40000 });
    assert.equal(await noteCount(page), 2, "no note lost");
  }
  await addNote(b);
  await a.waitForFunction(() => document.querySelectorAll(".note").length === 3, null, { timeout: WAIT });
  await server.stop();
});

test("two instances with Redis, one tab on each, act as one board", async () => {
  const redis = await startRedis();
  const env = { REDIS_URL: redis, JWT_SECRET: SECRET };
  const one = await startServer(env);
  const two = await startServer(env);
  await waitReady(one.port);
  await waitReady(two.port);
  const a = await openBoard(one.port, "pair", jwt("ann", "Ann"));
  const b = await openBoard(two.port, "pair", jwt("bob", "Bob"));
  for (const page of [a, b]) {
    await page.waitForFunction(() => document.querySelectorAll("#users span").length === 2, null, { timeout: WAIT });
  }
  const id = await addNote(a);
  await b.waitForSelector(`.note[data-id="${id}"]`, { timeout: WAIT });
  await a.mouse.move(400, 300);
  await a.mouse.move(410, 310, { steps: 2 });
  await b.waitForSelector('.cursor[data-user="ann"]', { timeout: WAIT });
  await one.stop();
  await two.stop();
});
