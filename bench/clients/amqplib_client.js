// The `clients` section's patterns through amqplib's promise API, as its README and
// the RabbitMQ tutorials write them: sendToQueue per message (waiting for 'drain'
// when it returns false), consume with prefetch and ack, a ConfirmChannel with
// waitForConfirms. One run per invocation, one result line on stdout:
//
//   node amqplib_client.js MODE URL QUEUE N  ->  RESULT secs=S  (RESULT p50_us=U for roundtrip)
//
// The orchestrator deletes the queue afterwards.
'use strict';
const amqp = require('amqplib');

async function main() {
  const [mode, url, queue, nArg] = process.argv.slice(2);
  const n = Number(nArg);
  const durable = ['confirm', 'seed-publish', 'seed-consume'].includes(mode);
  const opts = durable ? { persistent: true } : {};
  const body = Buffer.alloc(16, 'x');
  const conn = await amqp.connect(url);
  const ch = mode === 'confirm' ? await conn.createConfirmChannel() : await conn.createChannel();
  await ch.assertQueue(queue, { durable });

  const publishAll = async () => {
    for (let i = 0; i < n; i++) {
      if (!ch.sendToQueue(queue, body, opts)) {
        await new Promise((resolve) => ch.once('drain', resolve));
      }
    }
  };
  const waitAll = async () => {
    while ((await ch.checkQueue(queue)).messageCount < n) {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  };

  let start = process.hrtime.bigint();
  if (mode === 'publish' || mode === 'seed-publish') {
    await publishAll();
    await waitAll();
  } else if (mode === 'consume' || mode === 'seed-consume') {
    await publishAll();
    await waitAll();
    const cch = await conn.createChannel();
    await cch.prefetch(mode === 'consume' ? 1000 : 1);
    start = process.hrtime.bigint();
    await new Promise((resolve) => {
      let seen = 0;
      cch.consume(queue, (msg) => {
        cch.ack(msg);
        if (++seen === n) resolve();
      });
    });
  } else if (mode === 'confirm') {
    await publishAll();
    await ch.waitForConfirms();
  } else if (mode === 'roundtrip') {
    const sub = await amqp.connect(url);
    const cch = await sub.createChannel();
    let arrived = null;
    await cch.consume(queue, () => arrived(), { noAck: true });
    const warmup = Math.floor(n / 10);
    const samples = [];
    for (let i = 0; i < n + warmup; i++) {
      const t = process.hrtime.bigint();
      const got = new Promise((resolve) => { arrived = resolve; });
      ch.sendToQueue(queue, body);
      await got;
      if (i >= warmup) samples.push(Number(process.hrtime.bigint() - t) / 1e3);
    }
    samples.sort((a, b) => a - b);
    await sub.close();
    await conn.close();
    console.log(`RESULT p50_us=${samples[Math.floor(samples.length / 2)].toFixed(1)}`);
    return;
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  await conn.close();
  console.log(`RESULT secs=${secs.toFixed(6)}`);
}

main().catch((e) => {
  console.error(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
