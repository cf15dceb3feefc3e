// The seed tutorial's programs tested under node:test on a fresh Warren broker per test.
"use strict";

const { test } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { start, Fault } = require("warren-broker");
const tutorial = require("./tutorial.js");

/** A fresh broker for this test, stopped after it: the fixture. */
async function warren(t, options) {
  const broker = await start(options);
  t.after(() => broker.stop());
  return broker;
}

test("hello world", async (t) => {
  const broker = await warren(t);
  await tutorial.sendHello(broker.url);
  // The message waits in the queue until someone receives it.
  assert.deepEqual((await broker.queue("hello")).bodies, ["Hello World!"]);
  assert.deepEqual(await tutorial.receiveHello(broker.url), ["Hello World!"]);
  assert.equal((await broker.waitFor("hello", { empty: true })).messages, 0);
});

test("workers share the tasks and ack each", async (t) => {
  const broker = await warren(t);
  const workers = [await tutorial.startWorker(broker.url), await tutorial.startWorker(broker.url)];
  const tasks = Array.from({ length: 10 }, (_, i) => `task ${i}${".".repeat(i % 3)}`);
  for (const task of tasks) await tutorial.newTask(broker.url, task);
  // Every task acked, then nothing in flight: no sleeps in the test.
  await broker.waitFor("task_queue", { empty: true, noUnacked: true });
  await broker.waitUntilIdle();
  for (const w of workers) await w.stop();
  assert.deepEqual([...workers[0].done, ...workers[1].done].sort(), [...tasks].sort());
  assert.ok(workers[0].done.length > 0 && workers[1].done.length > 0, "prefetch 1 shares the work");
});

test("a seeded task is worked off", async (t) => {
  const broker = await warren(t);
  await tutorial.newTask(broker.url, "first");
  await broker.seed("task_queue", "seeded", { properties: { delivery_mode: 2 } });
  const worker = await tutorial.startWorker(broker.url);
  await broker.waitFor("task_queue", { empty: true, noUnacked: true });
  await worker.stop();
  assert.deepEqual(worker.done, ["first", "seeded"]);
});

test("every subscriber gets each log line", async (t) => {
  const broker = await warren(t);
  const receivers = [await tutorial.receiveLogs(broker.url), await tutorial.receiveLogs(broker.url)];
  await tutorial.emitLog(broker.url, "info: Hello World!");
  for (const r of receivers) {
    await broker.waitFor(r.queue, { empty: true, noUnacked: true });
  }
  await broker.waitUntilIdle();
  for (const r of receivers) {
    assert.deepEqual(r.received, ["info: Hello World!"]);
    await r.close();
  }
  // The exclusive queues went with their connections.
  assert.deepEqual((await broker.queues()).map((q) => q.name), []);
});

test("a nacked publish is retried", async (t) => {
  const broker = await warren(t);
  const publisher = await tutorial.ConfirmingPublisher.open(broker.url, "orders");
  await broker.inject(Fault.onAnyPublish().nth(3).nackConfirm());
  const attempts = [];
  for (let i = 1; i <= 5; i++) attempts.push(await publisher.publish(`order ${i}`));
  await publisher.close();
  assert.deepEqual(attempts, [1, 1, 2, 1, 1]);
  // A nacked message may or may not be in the queue (RabbitMQ's rule).
  const bodies = new Set((await broker.queue("orders")).bodies);
  assert.deepEqual([...bodies].sort(), ["order 1", "order 2", "order 3", "order 4", "order 5"]);
});

test("a reminder expires after thirty minutes (virtual clock)", async (t) => {
  const broker = await warren(t, { virtualClock: true });
  await tutorial.scheduleReminder(broker.url, "stand up");
  await broker.advance(29 * 60_000);
  assert.deepEqual((await broker.queue("reminders")).bodies, ["stand up"]);
  await broker.advance(2 * 60_000);
  assert.deepEqual((await broker.queue("reminders")).bodies, []);
  assert.equal(await tutorial.nextReminder(broker.url), null);
});

test("durable tasks survive a restart", async (t) => {
  const broker = await warren(t);
  await tutorial.newTask(broker.url, "resize 1.png");
  await tutorial.newTask(broker.url, "resize 2.png");
  await tutorial.sendHello(broker.url); // transient: gone after the restart
  await broker.restart();
  assert.equal(await broker.queue("hello"), null);
  const worker = await tutorial.startWorker(broker.url);
  await broker.waitFor("task_queue", { empty: true, noUnacked: true });
  await worker.stop();
  assert.deepEqual(worker.done, ["resize 1.png", "resize 2.png"]);
});

test("confirmed tasks survive a crash (data directory)", async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "warren-"));
  t.after(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const broker = await warren(t, { dataDir });
  const publisher = await tutorial.ConfirmingPublisher.open(broker.url, "task_queue");
  await publisher.publish("resize 1.png");
  await publisher.close();
  await broker.crash();
  assert.deepEqual((await broker.queue("task_queue")).bodies, ["resize 1.png"]);
});
