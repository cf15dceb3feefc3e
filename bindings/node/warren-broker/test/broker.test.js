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

test("rabbitmqVersion chooses which RabbitMQ the broker says it is", withReal, async () => {
  const broker = await start({ rabbitmqVersion: "4.3" });
  try {
    const { hostname, port } = new URL(broker.url);
    // connection.start, the first frame after the protocol header, names the release.
    const start = await new Promise((resolve, reject) => {
      const sock = net.connect(Number(port), hostname, () => sock.write(Buffer.from("AMQP\x00\x00\x09\x01", "latin1")));
      let got = Buffer.alloc(0);
      sock.on("data", (d) => {
        got = Buffer.concat([got, d]);
        if (got.length >= 7 && got.length >= 8 + got.readUInt32BE(3)) {
          sock.destroy();
          resolve(got.toString("latin1"));
        }
      });
      sock.on("error", reject);
    });
    assert.match(start, /product.{5}RabbitMQ/s);
    assert.match(start, /version.{5}4\.3\.5/s);
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

// A few AMQP 0-9-1 frames by hand (this package has no AMQP client to lean on):
// connect, declare a queue, publish to it, get the message, ack it, close. Every
// frame is written at once; the broker reads them in order, and basic.get's
// answer carries delivery tag 1, which the ack names.
function amqpSession(url, queue, body) {
  const short = (s) => Buffer.concat([Buffer.from([Buffer.byteLength(s)]), Buffer.from(s)]);
  const long = (b) => {
    const n = Buffer.alloc(4);
    n.writeUInt32BE(b.length);
    return Buffer.concat([n, b]);
  };
  const u16 = (v) => Buffer.from([v >> 8, v & 255]);
  const frame = (type, channel, payload) => {
    const head = Buffer.alloc(7);
    head.writeUInt8(type, 0);
    head.writeUInt16BE(channel, 1);
    head.writeUInt32BE(payload.length, 3);
    return Buffer.concat([head, payload, Buffer.from([0xce])]);
  };
  const method = (channel, cls, id, ...args) => frame(1, channel, Buffer.concat([u16(cls), u16(id), ...args]));
  const empty = Buffer.alloc(4);
  const u64 = (v) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(v));
    return b;
  };
  // Warren's (and RabbitMQ's) limits: 0 channels would mean "no limit", refused.
  const tuneOk = Buffer.alloc(8);
  tuneOk.writeUInt16BE(2047, 0);
  tuneOk.writeUInt32BE(131072, 2);
  const data = Buffer.from(body);
  const header = Buffer.concat([u16(60), u16(0), u64(data.length), u16(0)]);
  const out = Buffer.concat([
    Buffer.from("AMQP\x00\x00\x09\x01", "latin1"),
    method(0, 10, 11, empty, short("PLAIN"), long(Buffer.from("\0guest\0guest")), short("en_US")),
    method(0, 10, 31, tuneOk),
    method(0, 10, 40, short("/"), short(""), Buffer.from([0])),
    method(1, 20, 10, short("")),
    method(1, 50, 10, u16(0), short(queue), Buffer.from([0]), empty),
    method(1, 60, 40, u16(0), short(""), short(queue), Buffer.from([0])),
    frame(2, 1, header),
    frame(3, 1, data),
    method(1, 60, 70, u16(0), short(queue), Buffer.from([0])),
    method(1, 60, 80, u64(1), Buffer.from([0])),
    method(0, 10, 50, u16(200), short(""), u16(0), u16(0)),
  ]);
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => socket.write(out));
    let seen = Buffer.alloc(0);
    socket.on("data", (chunk) => {
      seen = Buffer.concat([seen, chunk]);
      // Frames in: stop at connection.close-ok (class 10, method 51).
      for (let at = 0; at + 7 <= seen.length; ) {
        const size = seen.readUInt32BE(at + 3);
        if (at + 8 + size > seen.length) break;
        if (seen[at] === 1 && seen.readUInt16BE(at + 7) === 10 && seen.readUInt16BE(at + 9) === 51) {
          socket.end();
          resolve();
          return;
        }
        at += 8 + size;
      }
    });
    socket.on("error", reject);
    socket.on("close", () => reject(new Error("the broker closed the socket before close-ok")));
  });
}

test("the trace file and the Mermaid text show what the test did", withReal, async (t) => {
  const broker = await start();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "warren-trace-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  try {
    await amqpSession(broker.url, "orders-node", "order 1");
    const q = await broker.waitFor("orders-node", { empty: true, noUnacked: true });
    assert.equal(q.unacked, 0);

    const file = path.join(dir, "trace.html");
    assert.equal(await broker.traceHtml(file), file);
    const html = fs.readFileSync(file, "utf8");
    assert.match(html.trimStart(), /^<!doctype html>/i);
    // One file: nothing to fetch from elsewhere.
    assert.ok(!html.includes("<script src") && !html.includes("<link"));
    for (const seen of ["orders-node", "basic.publish", "basic.get-ok", "basic.ack"]) assert.ok(html.includes(seen), seen);

    const lines = (await broker.traceMermaid()).split("\n");
    assert.equal(lines[0], "sequenceDiagram");
    assert.ok(lines.includes("    participant B as broker"));
    const arrows = lines.filter((l) => l.includes("->>")).map((l) => l.trim());
    const index = (re) => {
      const i = arrows.findIndex((a) => re.test(a));
      assert.ok(i >= 0, `no arrow ${re} in\n${arrows.join("\n")}`);
      return i;
    };
    // The frames were sent at once, so the client's arrows come in the order
    // written; the broker's answers in the order it gave them.
    const publish = index(/^C\d+->>B: ch1 basic\.publish .*orders-node/);
    const body = index(/^C\d+-->>B: ch1 content-body .*order 1/);
    const get = index(/^C\d+->>B: ch1 basic\.get queue=.*orders-node/);
    const ack = index(/^C\d+->>B: ch1 basic\.ack delivery_tag=1/);
    const getOk = index(/^B->>C\d+: ch1 basic\.get-ok delivery_tag=1/);
    const closeOk = index(/^B->>C\d+: ch0 connection\.close-ok/);
    assert.ok(publish < body && body < get && get < ack && getOk < closeOk, arrows.join("\n"));
  } finally {
    await broker.stop();
  }
});
