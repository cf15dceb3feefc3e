// The package's own tests: starting, stopping, and every way it can go wrong, each a
// clear error and never a hang. The fake binaries are shell scripts that misbehave on
// purpose; the rest runs the real `warren` (WARREN_BIN, the platform package, or PATH).
"use strict";

const { test } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");
const { start, findBinary, Fault, BinaryNotFound, StartError, BrokerDied, WaitTimeout } = require("..");

function fake(t, body) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fake-warren-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "warren");
  fs.writeFileSync(file, "#!/bin/sh\n" + body, { mode: 0o755 });
  return file;
}

let realBinary = null;
try {
  realBinary = findBinary();
} catch (e) {
  realBinary = null;
  console.log(`# the tests of the real broker are skipped: ${e.message}`);
}
const withReal = { skip: realBinary ? false : "no warren binary" };

test("a missing binary says how to get one", async () => {
  await assert.rejects(start({ binary: "/nowhere/warren" }), (e) => e instanceof BinaryNotFound && /\/nowhere\/warren/.test(e.message));
});

test("a broker that exits at once shows its log", async (t) => {
  const binary = fake(t, "echo 'warren: Address already in use (os error 98)' >&2; exit 1\n");
  await assert.rejects(start({ binary }), (e) => e instanceof StartError && /exited with status 1[\s\S]*Address already in use/.test(e.message));
});

test("a binary without the management URL is named", async (t) => {
  const binary = fake(t, "echo amqp://guest:guest@127.0.0.1:1/%2f\n");
  await assert.rejects(start({ binary }), (e) => e instanceof StartError && /printed no management URL/.test(e.message));
});

test("a broker that never gets ready is killed after the timeout", async (t) => {
  const binary = fake(t, "exec sleep 60\n");
  await assert.rejects(start({ binary, startTimeout: 300 }), (e) => e instanceof StartError && /printed 0 of its 2 URL lines within 300 ms/.test(e.message));
});

test("stop kills a broker that ignores SIGTERM", async (t) => {
  const binary = fake(t, "trap '' TERM\necho amqp://x\necho http://127.0.0.1:1\nwhile :; do sleep 1; done\n");
  const broker = await start({ binary });
  assert.equal(await broker.stop({ timeoutMs: 300 }), "SIGKILL");
});

test("unknown options and faults without an action are refused", async () => {
  await assert.rejects(start({ virtualClok: true }), /unknown options: virtualClok/);
  assert.throws(() => Fault.onAnyPublish().nth(3).toJSON(), /no action/);
});

test("start, urls, stop", withReal, async () => {
  const broker = await start();
  assert.match(broker.url, /^amqp:\/\/guest:guest@127\.0\.0\.1:\d+\/%2f$/);
  assert.match(broker.managementUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.deepEqual(await broker.queues(), []);
  assert.equal(await broker.stop(), 0); // SIGTERM is a graceful shutdown
});

test("a port in use is named", withReal, async () => {
  const server = net.createServer();
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  try {
    await assert.rejects(start({ port: server.address().port }), (e) => e instanceof StartError && /in use/i.test(e.message));
  } finally {
    server.close();
  }
});

test("a broker that dies mid-test is reported", withReal, async () => {
  const broker = await start();
  process.kill(broker.pid, "SIGKILL");
  await assert.rejects(broker.queues(), (e) => e instanceof BrokerDied && /killed by SIGKILL/.test(e.message));
  await broker.stop();
});

test("a wait that runs out is a WaitTimeout", withReal, async () => {
  const broker = await start();
  try {
    await assert.rejects(broker.waitFor("nothing-here", { messages: 1, timeoutMs: 200 }), WaitTimeout);
  } finally {
    await broker.stop();
  }
});

test("the virtual clock moves", withReal, async () => {
  const broker = await start({ virtualClock: true });
  try {
    const before = (await broker.clock()).now_ms;
    await broker.advance(90_000);
    assert.equal((await broker.clock()).now_ms, before + 90_000);
  } finally {
    await broker.stop();
  }
});
