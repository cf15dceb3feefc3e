// The seed tutorial's programs (tests/seed/) with amqplib, as application code that a
// test can call: each function is one script, taking the broker's URL.
"use strict";

const amqp = require("amqplib");

async function connect(url, socketOptions) {
  // noDelay: amqplib leaves Nagle's algorithm on, which costs about 40 ms per
  // connection handshake on loopback (RabbitMQ or Warren alike).
  const connection = await amqp.connect(url, { noDelay: true, ...socketOptions });
  // A broker that closes the connection (a restart: 320) emits "error"; an unheard
  // "error" would end the process.
  connection.on("error", () => {});
  return connection;
}

// ---- hello world ----

async function sendHello(url) {
  const connection = await connect(url);
  const channel = await connection.createChannel();
  await channel.assertQueue("hello", { durable: false });
  channel.sendToQueue("hello", Buffer.from("Hello World!"));
  await channel.close();
  await connection.close();
}

/** Receives `count` messages from "hello" (no ack), as the receiving script does. */
async function receiveHello(url, count = 1) {
  const connection = await connect(url);
  const channel = await connection.createChannel();
  await channel.assertQueue("hello", { durable: false });
  const received = [];
  await new Promise((resolve) => {
    channel.consume("hello", (msg) => {
      received.push(msg.content.toString());
      if (received.length === count) resolve();
    }, { noAck: true });
  });
  await connection.close();
  return received;
}

// ---- work queues ----

async function newTask(url, message) {
  const connection = await connect(url);
  const channel = await connection.createChannel();
  await channel.assertQueue("task_queue", { durable: true });
  channel.sendToQueue("task_queue", Buffer.from(message), { persistent: true });
  await channel.close();
  await connection.close();
}

/** The worker: prefetch 1, manual acks, `msPerDot` of work per "." in the task. */
async function startWorker(url, { msPerDot = 0 } = {}) {
  const connection = await connect(url);
  const channel = await connection.createChannel();
  await channel.assertQueue("task_queue", { durable: true });
  await channel.prefetch(1);
  const done = [];
  await channel.consume("task_queue", (msg) => {
    const dots = msg.content.toString().split(".").length - 1;
    setTimeout(() => {
      done.push(msg.content.toString());
      channel.ack(msg);
    }, dots * msPerDot);
  }, { noAck: false });
  return { done, stop: () => connection.close() };
}

// ---- publish/subscribe ----

async function emitLog(url, message) {
  const connection = await connect(url);
  const channel = await connection.createChannel();
  await channel.assertExchange("logs", "fanout", { durable: false });
  channel.publish("logs", "", Buffer.from(message));
  await channel.close();
  await connection.close();
}

/** An exclusive, server-named queue bound to "logs"; `received` fills as lines come. */
async function receiveLogs(url) {
  const connection = await connect(url);
  const channel = await connection.createChannel();
  await channel.assertExchange("logs", "fanout", { durable: false });
  const { queue } = await channel.assertQueue("", { exclusive: true });
  await channel.bindQueue(queue, "logs", "");
  const received = [];
  await channel.consume(queue, (msg) => received.push(msg.content.toString()), { noAck: true });
  return { queue, received, close: () => connection.close() };
}

// ---- publisher confirms, retried ----

class ConfirmingPublisher {
  static async open(url, queue) {
    const connection = await connect(url);
    const channel = await connection.createConfirmChannel();
    await channel.assertQueue(queue, { durable: true });
    return new ConfirmingPublisher(connection, channel, queue);
  }

  constructor(connection, channel, queue) {
    this.connection = connection;
    this.channel = channel;
    this.queue = queue;
  }

  /** Resolves with the attempts it took; rejects once `attempts` confirms were nacks. */
  async publish(body, attempts = 3) {
    for (let attempt = 1; ; attempt++) {
      const nacked = await new Promise((resolve) => {
        this.channel.sendToQueue(this.queue, Buffer.from(body), { persistent: true }, (err) => resolve(Boolean(err)));
      });
      if (!nacked) return attempt;
      if (attempt === attempts) throw new Error(`${body} nacked ${attempts} times`);
    }
  }

  close() {
    return this.connection.close();
  }
}

// ---- messages that expire ----

async function scheduleReminder(url, text, ttlMs = 30 * 60_000) {
  const connection = await connect(url);
  const channel = await connection.createChannel();
  await channel.assertQueue("reminders", { durable: true, arguments: { "x-message-ttl": ttlMs } });
  channel.sendToQueue("reminders", Buffer.from(text));
  await channel.close();
  await connection.close();
}

async function nextReminder(url) {
  const connection = await connect(url);
  const channel = await connection.createChannel();
  const msg = await channel.get("reminders", { noAck: true });
  await connection.close();
  return msg ? msg.content.toString() : null;
}

module.exports = {
  connect, sendHello, receiveHello, newTask, startWorker, emitLog, receiveLogs,
  ConfirmingPublisher, scheduleReminder, nextReminder,
};
