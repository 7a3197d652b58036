// Unit tests of the browser client's state logic, against a fake socket and fake timers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BoardClient, BoardError, packMessage, unpackMessage } from "../../static/boardcast.js";

/** A WebSocket stand-in: records what the client sends and lets the test play the server. */
class FakeSocket {
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.sent = [];
    this.readyState = 1;
    FakeSocket.all.push(this);
  }
  send(data) { this.sent.push(typeof data === "string" ? JSON.parse(data) : unpackMessage(data)); }
  close(code) { this.readyState = 3; this.closedWith = code; }
  serve(type, payload, seq) { this.onmessage({ data: JSON.stringify(seq === undefined ? { type, payload } : { type, payload, seq }) }); }
  drop(code) { this.readyState = 3; this.onclose({ code }); }
  last() { return this.sent[this.sent.length - 1]; }
}

/** Timers the test advances by hand. */
function fakeClock() {
  const clock = { now: 0, timers: [] };
  clock.setTimeout = (f, ms) => { const t = { at: clock.now + ms, f }; clock.timers.push(t); return t; };
  clock.clearTimeout = (t) => { clock.timers = clock.timers.filter((x) => x !== t); };
  clock.advance = async (ms) => {
    clock.now += ms;
    for (const t of clock.timers.filter((t) => t.at <= clock.now)) {
      clock.timers = clock.timers.filter((x) => x !== t);
      await t.f();
    }
  };
  return clock;
}

const snapshot = (extra = {}) => ({
  boardId: "b", seq: 0, self: { userId: "ann", sessionId: "s1", color: "#e6194b" },
  users: [{ userId: "ann", user: { name: "Ann", avatar: null }, color: "#e6194b", cursor: null, status: "active" }],
  items: [], values: [], resync: false, ...extra,
});

async function connected(options = {}) {
  FakeSocket.all = [];
  const clock = fakeClock();
  const client = new BoardClient({
    board: "b", token: "t0", url: "ws://x", WebSocket: FakeSocket, random: () => 0.5,
    setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: () => clock.now, ...options,
  });
  await client.connect();
  const socket = FakeSocket.all.at(-1);
  socket.serve("board.snapshot", snapshot(options.snapshot));
  return { client, socket, clock };
}

test("a snapshot fills presence and the board", async () => {
  const { client } = await connected({ snapshot: { seq: 4, items: [{ id: "i", version: 2 }], values: [{ itemId: "i", columnId: "c", value: 1, version: 1 }] } });
  assert.equal(client.state.status, "connected");
  assert.equal(client.state.seq, 4);
  assert.equal(client.state.users.get("ann").color, "#e6194b");
  assert.deepEqual(client.state.items.get("i"), { id: "i", version: 2 });
  assert.equal(client.value("i", "c").value, 1);
});

test("presence, cursors and typing events update the state", async () => {
  const { client, socket } = await connected();
  socket.serve("presence.join", { userId: "bob", user: { name: "Bob", avatar: null }, color: "#3cb44b" });
  socket.serve("cursor.move", { userId: "bob", position: { x: 1, y: 2 } });
  socket.serve("typing.start", { userId: "bob", itemId: "i", columnId: "c" });
  assert.deepEqual(client.state.users.get("bob").cursor, { x: 1, y: 2 });
  assert.deepEqual(client.state.typing.get("bob"), { itemId: "i", columnId: "c" });
  socket.serve("presence.update", { userId: "bob", status: "idle" });
  assert.equal(client.state.users.get("bob").status, "idle");
  socket.serve("presence.leave", { userId: "bob" });
  assert.equal(client.state.users.has("bob"), false);
  assert.equal(client.state.typing.has("bob"), false);
});

test("an optimistic create shows at once and is confirmed by its ack", async () => {
  const { client, socket } = await connected();
  const done = client.createItem({ id: "n1", title: "hi" });
  assert.deepEqual(client.state.items.get("n1"), { id: "n1", title: "hi", version: 1 });
  const sent = socket.last();
  assert.equal(sent.type, "item.created");
  socket.serve("ack", { id: sent.id, seq: 1, version: 1 });
  assert.deepEqual(await done, { id: sent.id, seq: 1, version: 1 });
  assert.equal(client.state.seq, 1);
  assert.deepEqual(client.state.items.get("n1"), { id: "n1", title: "hi", version: 1 });
});

test("a conflict rolls back to the server's current value", async () => {
  const { client, socket } = await connected({ snapshot: { seq: 1, items: [{ id: "i", version: 1 }] } });
  socket.serve("value.set", { itemId: "i", columnId: "c", value: "theirs", version: 1, userId: "bob" }, 2);
  const done = client.setValue("i", "c", "mine", { expectedVersion: 0 });
  assert.equal(client.value("i", "c").value, "mine");
  socket.serve("error", { id: socket.last().id, code: "conflict", message: "stale", current: { itemId: "i", columnId: "c", value: "theirs", version: 1 } });
  await assert.rejects(done, (e) => e instanceof BoardError && e.code === "conflict");
  assert.equal(client.value("i", "c").value, "theirs");
});

test("a refused operation without current rolls back to what was confirmed", async () => {
  const { client, socket } = await connected({ snapshot: { seq: 1, items: [{ id: "i", version: 1, t: "a" }] } });
  const done = client.updateItem("i", { t: "b" });
  assert.equal(client.state.items.get("i").t, "b");
  socket.serve("error", { id: socket.last().id, code: "forbidden", message: "viewer" });
  await assert.rejects(done, { code: "forbidden" });
  assert.equal(client.state.items.get("i").t, "a");
});

test("an operation answered unavailable is retried under the same id until acked", async () => {
  const { client, socket, clock } = await connected({ snapshot: { seq: 1, items: [{ id: "i", version: 1 }] } });
  const done = client.setValue("i", "c", "v");
  const sent = socket.last();
  socket.serve("error", { id: sent.id, code: "unavailable", message: "retry" });
  assert.equal(client.value("i", "c").value, "v", "still shown while retried");
  await clock.advance(1000);
  assert.equal(socket.sent.length, 2);
  assert.deepEqual(socket.last(), sent, "the same frame, id included");
  socket.serve("error", { id: sent.id, code: "unavailable", message: "retry" });
  await clock.advance(1000);
  assert.deepEqual(socket.last(), sent);
  socket.serve("ack", { id: sent.id, seq: 2, version: 1 });
  assert.deepEqual(await done, { id: sent.id, seq: 2, version: 1 });
});

test("an operation still unavailable after its tries is rolled back", async () => {
  const { client, socket, clock } = await connected({ snapshot: { seq: 1, items: [{ id: "i", version: 1 }] } });
  const done = client.setValue("i", "c", "v");
  const sent = socket.last();
  for (let n = 0; n < 6; n++) {
    socket.serve("error", { id: sent.id, code: "unavailable", message: "retry" });
    await clock.advance(10000);
  }
  await assert.rejects(done, { code: "unavailable" });
  assert.equal(client.value("i", "c"), undefined);
});

test("operation ids differ between clients", async () => {
  const a = await connected({ random: Math.random });
  const b = await connected({ random: Math.random });
  a.client.createItem({ id: "x" });
  b.client.createItem({ id: "x" });
  assert.notEqual(a.socket.last().id, b.socket.last().id);
});

test("others' events apply beneath pending operations", async () => {
  const { client, socket } = await connected({ snapshot: { seq: 1, items: [{ id: "i", version: 1 }] } });
  client.updateItem("i", { mine: 1 });
  socket.serve("item.updated", { itemId: "i", changes: { theirs: 2 }, version: 2, userId: "bob" }, 2);
  assert.deepEqual(client.state.items.get("i"), { id: "i", version: 3, mine: 1, theirs: 2 });
});

test("cursor moves are throttled to one per 50 ms and the newest is sent", async () => {
  const { client, socket, clock } = await connected();
  client.moveCursor(1, 1);
  client.moveCursor(2, 2);
  client.moveCursor(3, 3);
  const cursors = () => socket.sent.filter((f) => f.type === "cursor.move").map((f) => f.payload.position);
  assert.deepEqual(cursors(), [{ x: 1, y: 1 }]);
  await clock.advance(50);
  assert.deepEqual(cursors(), [{ x: 1, y: 1 }, { x: 3, y: 3 }]);
  client.leaveCanvas();
  await clock.advance(50);
  assert.deepEqual(cursors().at(-1), null);
});

test("a drop reconnects with backoff and resumes from the last seq", async () => {
  const { client, socket, clock } = await connected({ snapshot: { seq: 7 } });
  socket.drop(1006);
  assert.equal(client.state.status, "reconnecting");
  assert.equal(FakeSocket.all.length, 1, "waits before reconnecting");
  await clock.advance(1000);
  const next = FakeSocket.all.at(-1);
  assert.equal(FakeSocket.all.length, 2);
  assert.match(next.url, /last_seq=7$/);
  next.serve("board.resumed", { boardId: "b", self: snapshot().self, users: snapshot().users, fromSeq: 8, toSeq: 8 });
  next.serve("item.created", { item: { id: "x", version: 1 }, userId: "bob" }, 8);
  assert.equal(client.state.status, "resumed");
  assert.equal(client.state.seq, 8);
  assert.ok(client.state.items.has("x"));
});

test("a resume names the epoch of its seq", async () => {
  const { client, socket, clock } = await connected({ snapshot: { seq: 4, epoch: "e1" } });
  assert.equal(client.state.epoch, "e1");
  socket.drop(1012);
  await clock.advance(0);
  const next = FakeSocket.all.at(-1);
  assert.notEqual(next, socket);
  assert.match(next.url, /last_seq=4&epoch=e1/);
});

test("backoff grows with full jitter up to 30 s", async () => {
  const delays = [];
  const client = new BoardClient({ board: "b", token: "t", random: () => 1, setTimeout: (f, ms) => delays.push(ms), clearTimeout: () => {} });
  for (let i = 0; i < 8; i++) client.scheduleReconnect();
  assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  const low = new BoardClient({ board: "b", token: "t", random: () => 0, setTimeout: (f, ms) => delays.push(ms), clearTimeout: () => {} });
  low.scheduleReconnect();
  assert.equal(delays.at(-1), 1000, "never below 1 s");
});

test("1012 reconnects at once; 4003 never", async () => {
  const { client, socket } = await connected();
  socket.drop(1012);
  await Promise.resolve();
  assert.equal(FakeSocket.all.length, 2, "reconnected at once");
  FakeSocket.all.at(-1).drop(4003);
  assert.equal(client.state.status, "kicked");
  assert.equal(FakeSocket.all.length, 2);
});

test("4001 asks the token provider again before reconnecting", async () => {
  const tokens = ["first", "second"];
  const { client, socket, clock } = await connected({ token: async () => tokens.shift() });
  assert.match(socket.url, /token=first/);
  socket.drop(4001);
  await clock.advance(1000);
  assert.match(FakeSocket.all.at(-1).url, /token=second/);
  assert.equal(client.state.status, "reconnecting");
});

test("4001 with a fixed token stops", async () => {
  const { client, socket } = await connected();
  socket.drop(4001);
  assert.equal(client.state.status, "expired");
});

test("pending operations fail when the connection drops", async () => {
  const { client, socket } = await connected();
  const done = client.createItem({ id: "n" });
  socket.drop(1006);
  await assert.rejects(done, { code: "unavailable" });
  assert.equal(client.state.items.has("n"), false);
});

test("backend events reach the event listener", async () => {
  const { client, socket } = await connected();
  const seen = [];
  client.on("event", (frame) => seen.push(frame.type));
  socket.serve("order.shipped", { userId: "server" }, 1);
  socket.serve("notice.sent", { m: 1 });
  assert.deepEqual(seen, ["order.shipped", "notice.sent"]);
  assert.equal(client.state.seq, 1);
});

test("with workspace: true the client asks for it and follows who is online in the tenant", async () => {
  const { client, socket } = await connected({ workspace: true });
  assert.match(socket.url, /&workspace=1$/);
  assert.equal(client.state.workspace, null, "unknown until the server says");
  const seen = [];
  client.on("workspace", (detail) => seen.push(detail));
  const ann = { userId: "ann", user: { name: "Ann", avatar: null } };
  const bob = { userId: "bob", user: { name: "Bob", avatar: null } };
  socket.serve("workspace.snapshot", { users: [ann] });
  socket.serve("workspace.online", bob);
  assert.deepEqual([...client.state.workspace.keys()], ["ann", "bob"]);
  assert.deepEqual(client.state.workspace.get("bob"), bob);
  socket.serve("workspace.offline", bob);
  assert.deepEqual([...client.state.workspace.keys()], ["ann"]);
  assert.deepEqual(seen, [{ type: "snapshot" }, { type: "online", userId: "bob" }, { type: "offline", userId: "bob" }]);
  // A reconnection's snapshot replaces the list.
  socket.serve("workspace.snapshot", { users: [bob] });
  assert.deepEqual([...client.state.workspace.keys()], ["bob"]);
});

test("without workspace the client does not ask for it", async () => {
  const { client, socket } = await connected();
  assert.doesNotMatch(socket.url, /workspace/);
  assert.equal(client.state.workspace, null);
});

const hex = (bytes) => Buffer.from(bytes).toString("hex");

test("MessagePack: values encode to the bytes the format defines", () => {
  const cases = [
    [null, "c0"], [false, "c2"], [true, "c3"],
    [0, "00"], [127, "7f"], [128, "cc80"], [255, "ccff"], [256, "cd0100"], [65535, "cdffff"],
    [65536, "ce00010000"], [2 ** 32, "cf0000000100000000"], [2 ** 53 - 1, "cf001fffffffffffff"],
    [-1, "ff"], [-32, "e0"], [-33, "d0df"], [-128, "d080"], [-129, "d1ff7f"], [-32768, "d18000"],
    [-32769, "d2ffff7fff"], [-(2 ** 31) - 1, "d3ffffffff7fffffff"],
    [1.5, "cb3ff8000000000000"], [-0.25, "cbbfd0000000000000"], [2 ** 53, "cb4340000000000000"],
    ["", "a0"], ["é", "a2c3a9"], ["x".repeat(31), "bf" + "78".repeat(31)],
    ["x".repeat(32), "d920" + "78".repeat(32)], ["x".repeat(256), "da0100" + "78".repeat(256)],
    [[], "90"], [[1, [2]], "920191" + "02"], [Array(16).fill(0), "dc0010" + "00".repeat(16)],
    [{}, "80"], [{ a: 1, b: undefined }, "81a16101", { a: 1 }], [new Uint8Array([1, 2]), "c4020102"],
  ];
  for (const [value, expected, decoded = value] of cases) {
    assert.equal(hex(packMessage(value)), expected, JSON.stringify(value));
    assert.deepEqual(unpackMessage(Buffer.from(expected, "hex")), decoded);
  }
  // A cursor move as the server sends it (keys in the server's order).
  const frame = Buffer.from(
    "82a77061796c6f616482a8706f736974696f6e82a1780aa179cb4004000000000000a6757365724964a3616e6ea474797065ab637572736f722e6d6f7665",
    "hex");
  assert.deepEqual(unpackMessage(frame), { payload: { position: { x: 10, y: 2.5 }, userId: "ann" }, type: "cursor.move" });
  assert.equal(frame.length, 62);
});

test("MessagePack: every width decodes, and broken input throws", () => {
  // Forms the encoder never picks but a peer may send.
  assert.equal(unpackMessage(Buffer.from("cd0001", "hex")), 1);
  assert.equal(unpackMessage(Buffer.from("ce00000002", "hex")), 2);
  assert.equal(unpackMessage(Buffer.from("d0ff", "hex")), -1);
  assert.equal(unpackMessage(Buffer.from("ca3fc00000", "hex")), 1.5);
  assert.equal(unpackMessage(Buffer.from("d90161", "hex")), "a");
  assert.equal(unpackMessage(Buffer.from("db0000000161", "hex")), "a");
  assert.deepEqual(unpackMessage(Buffer.from("dd0000000101", "hex")), [1]);
  assert.deepEqual(unpackMessage(Buffer.from("de0001a16101", "hex")), { a: 1 });
  assert.deepEqual(unpackMessage(Buffer.from("df00000001a16101", "hex")), { a: 1 });
  assert.equal(unpackMessage(Buffer.from("d3ffffffffffffffff", "hex")), -1);
  assert.equal(unpackMessage(new Uint8Array([0x05]).buffer), 5);
  for (const broken of ["", "92", "a3616263ff", "d9", "8101c0", "c1", "0000", "a2c3"]) {
    assert.throws(() => unpackMessage(Buffer.from(broken, "hex")), undefined, broken);
  }
});

test("a msgpack client asks for the subprotocol and speaks binary both ways", async () => {
  FakeSocket.all = [];
  const client = new BoardClient({ board: "b", token: "t0", url: "ws://x", WebSocket: FakeSocket, encoding: "msgpack" });
  await client.connect();
  const socket = FakeSocket.all.at(-1);
  assert.deepEqual(socket.protocols, ["boardcast.v1.msgpack"]);
  assert.equal(socket.binaryType, "arraybuffer");
  const packed = (frame) => socket.onmessage({ data: packMessage(frame).buffer });
  packed({ type: "board.snapshot", payload: snapshot() });
  assert.equal(client.state.status, "connected");
  packed({ type: "item.created", payload: { item: { id: "i", version: 1, w: 2.5 } }, seq: 1 });
  assert.equal(client.state.items.get("i").w, 2.5);
  assert.equal(client.state.seq, 1);
  client.moveCursor(3, 4);
  assert.deepEqual(socket.last(), { type: "cursor.move", payload: { position: { x: 3, y: 4 } } });
  assert.throws(() => new BoardClient({ board: "b", token: "t", encoding: "cbor" }), /encoding/);
});
