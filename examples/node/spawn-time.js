// Spawn-to-ready time of a broker from Node: from start() until both URL lines are
// read, over N starts (100 by default); prints p50 and p90.
//
//   node examples/node/spawn-time.js [N]
"use strict";

const { start } = require("warren-broker");

async function main() {
  const n = Number(process.argv[2] ?? 100);
  const times = [];
  for (let i = 0; i < n; i++) {
    const began = process.hrtime.bigint();
    const broker = await start();
    times.push(Number(process.hrtime.bigint() - began) / 1e6);
    await broker.stop();
  }
  times.sort((a, b) => a - b);
  const p = (q) => times[Math.floor(n * q)].toFixed(1);
  console.log(`node: spawn to ready p50 ${p(0.5)} ms, p90 ${p(0.9)} ms over ${n} starts`);
}

main();
