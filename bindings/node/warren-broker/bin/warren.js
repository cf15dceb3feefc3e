#!/usr/bin/env node
// The `warren` command of this package: runs the platform package's binary with the
// same arguments, standard streams and exit status.
"use strict";
const { spawnSync } = require("node:child_process");
const { findBinary } = require("../index.js");

let binary;
try {
  binary = findBinary();
} catch (e) {
  console.error(e.message);
  process.exit(127);
}
const result = spawnSync(binary, process.argv.slice(2), { stdio: "inherit" });
if (result.error) {
  console.error(`warren: cannot run ${binary}: ${result.error.message}`);
  process.exit(127);
}
process.exit(result.status ?? 1);
