// The README's quick start, run as written: its first `sh` block (the service) in the
// background from the repository root, then the others in one shell, in order. Only the
// environment differs: a DATA_DIR of the test's own, so the developer's data is left alone.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "../..");
// The service's first start compiles a release build.
const BUILD_WAIT = 15 * 60 * 1000;
const WAIT = 30 * 1000;

/** The `sh` blocks of the README's "Quick start" section, in order. */
function quickStartBlocks() {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const start = readme.indexOf("\n## Quick start\n");
  assert.ok(start >= 0, "README.md has a Quick start section");
  const end = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]);
}

function run(script, env, timeout) {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-euo", "pipefail", "-c", script], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error(`timed out: ${out}`)); }, timeout);
    child.on("exit", (code) => { clearTimeout(timer); resolve({ code, out }); });
  });
}

async function waitHealthy(service, log) {
  const deadline = Date.now() + BUILD_WAIT;
  for (;;) {
    try {
      if ((await fetch("http://127.0.0.1:8080/healthz")).ok) return;
    } catch {}
    if (service.exitCode !== null) throw new Error(`the service exited (${service.exitCode}): ${log()}`);
    if (Date.now() > deadline) throw new Error(`the service never answered: ${log()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

let service;
const dataDir = mkdtempSync(join(tmpdir(), "boardcast-readme-"));
after(async () => {
  if (service && service.exitCode === null) {
    process.kill(-service.pid, "SIGTERM");
    await new Promise((r) => service.once("exit", r));
  }
  rmSync(dataDir, { recursive: true, force: true });
});

test("the README's quick start runs as written", { timeout: BUILD_WAIT + 2 * WAIT }, async () => {
  const blocks = quickStartBlocks();
  assert.ok(blocks.length >= 3, `service, token and exchange blocks: ${blocks.length}`);
  assert.equal(blocks[0].trim(), "cargo run --release");
  const env = { ...process.env, DATA_DIR: dataDir };
  delete env.JWT_SECRET;
  delete env.REDIS_URL;
  let log = "";
  service = spawn("bash", ["-c", blocks[0]], { cwd: ROOT, env, detached: true, stdio: ["ignore", "ignore", "pipe"] });
  service.stderr.on("data", (d) => (log = (log + d).slice(-4000)));
  await waitHealthy(service, () => log);

  const { code, out } = await run(blocks.slice(1).join("\n"), env, WAIT);
  assert.equal(code, 0, out);
  // The exchange: the snapshot first, then the ack with the note's seq.
  assert.match(out, /^board\.snapshot /m, out);
  assert.match(out, /^ack \{"id":"1","seq":\d+,"version":1\}/m, out);
  // The backend's event was accepted: 202 with its seq, after the note's.
  assert.match(out, /^\{"seq":2\}$/m, out);
});
