// The webhook signature check that docs/protocol.md gives receivers, run as written against a
// signature the server's signer produces (the same vector its unit test asserts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = new URL("../../", import.meta.url).pathname;

async function documentedVerify() {
  const doc = readFileSync(join(ROOT, "docs/protocol.md"), "utf8");
  const section = doc.slice(doc.indexOf("\n## Webhooks\n"));
  const code = section.match(/```js\n([\s\S]*?)```/);
  assert.ok(code, "docs/protocol.md has a Node snippet under Webhooks");
  const file = join(mkdtempSync(join(tmpdir(), "verify-")), "verify.mjs");
  writeFileSync(file, code[1]);
  return (await import(file)).verify;
}

test("the documented Node check accepts the server's signature and nothing else", async () => {
  const verify = await documentedVerify();
  const header = "t=1700000000,v1=1b6ad1bc9bf48c52ce01939866d5877c6cc4e87ddad27e16673cb8c4964394a3";
  const body = '{"a":1}';
  assert.equal(verify("k", header, body, Infinity), true);
  assert.equal(verify("k", header, '{"a":2}', Infinity), false, "another body");
  assert.equal(verify("other", header, body, Infinity), false, "another secret");
  assert.equal(verify("k", header.replace("t=1700000000", "t=1700000001"), body, Infinity), false, "another time");
  assert.equal(verify("k", header, body), false, "too old with the default tolerance");
  assert.equal(verify("k", "v1=abc", body, Infinity), false, "no time");
});
