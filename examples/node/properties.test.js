// Property-based test (fast-check): sequences of publishes, work, worker crashes and
// broker restarts, each on a fresh Warren broker; every confirmed task must be done.
// A failure shrinks to a minimal sequence.
"use strict";

const { test } = require("node:test");
const assert = require("node:assert/strict");
const fc = require("fast-check");
const { start } = require("warren-broker");
const { connect } = require("./tutorial.js");

const QUEUE = "tasks";
const steps = fc.array(fc.constantFrom("publish", "work", "crash", "restart"), { maxLength: 12 });

/** The code under test: takes a task, does it, acks it (or acks first: the bug). */
class Worker {
  constructor(broker, ackFirst) {
    this.broker = broker;
    this.ackFirst = ackFirst;
    this.done = [];
  }
  async connect() {
    this.connection = await connect(this.broker.url, { clientProperties: { connection_name: "worker" } });
    this.channel = await this.connection.createChannel();
    this.channel.on("error", () => {});
    await this.channel.assertQueue(QUEUE, { durable: true });
  }
  async workOne(crash = false) {
    const msg = await this.channel.get(QUEUE, { noAck: false });
    if (!msg) return false;
    if (this.ackFirst) this.channel.ack(msg);
    if (crash) {
      // The process dies mid-task: its socket goes without a close.
      const [mine] = (await this.broker.connections()).filter(
        (c) => c.client_properties?.connection_name === "worker",
      );
      await this.broker.dropConnection(mine.id);
      await this.broker.waitFor(QUEUE, { noUnacked: true });
      await this.connect();
      return true;
    }
    this.done.push(msg.content.toString());
    if (!this.ackFirst) this.channel.ack(msg);
    return true;
  }
}

async function runCase(sequence, ackFirst = false) {
  const broker = await start();
  try {
    const publisherConnection = { current: null };
    const openPublisher = async () => {
      publisherConnection.current = await connect(broker.url);
      const ch = await publisherConnection.current.createConfirmChannel();
      await ch.assertQueue(QUEUE, { durable: true });
      return ch;
    };
    let publisher = await openPublisher();
    const worker = new Worker(broker, ackFirst);
    await worker.connect();
    const published = [];
    for (const step of sequence) {
      if (step === "publish") {
        const body = `task ${published.length}`;
        publisher.sendToQueue(QUEUE, Buffer.from(body), { persistent: true });
        await publisher.waitForConfirms(); // confirmed: the broker has it
        published.push(body);
      } else if (step === "work") {
        await worker.workOne();
      } else if (step === "crash") {
        await worker.workOne(true);
      } else {
        await broker.restart(); // every connection gets 320
        publisher = await openPublisher();
        await worker.connect();
      }
    }
    while (await worker.workOne()) {}
    const lost = published.filter((b) => !worker.done.includes(b));
    assert.deepEqual(lost, [], `tasks lost: ${lost.join(", ")}`);
  } finally {
    await broker.stop();
  }
}

test("every confirmed task is done", async () => {
  await fc.assert(fc.asyncProperty(steps, (s) => runCase(s)), { numRuns: 40 });
});

test("the ack-first bug is found and shrunk", async () => {
  const details = await fc.check(fc.asyncProperty(steps, (s) => runCase(s, true)), { numRuns: 100, seed: 42 });
  assert.ok(details.failed, "fast-check finds the lost task");
  // The smallest failing sequence: a task, and a worker that acked it and died.
  assert.deepEqual(details.counterexample[0], ["publish", "crash"]);
});
