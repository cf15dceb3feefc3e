// One Warren broker for a whole Jest or Vitest run, its URLs in the environment of
// every test file (AMQP_URL, WARREN_MANAGEMENT_URL).
//
//   vitest.config.js:  export default { test: { globalSetup: "./global-setup.js" } }
//   jest.config.js:    module.exports = { globalSetup: "./global-setup.js",
//                                         globalTeardown: "./global-setup.js" }
//
// Vitest calls the function and later the teardown it returns; Jest calls the same
// function as its setup and again as its teardown, where the broker is found running.
"use strict";

const { start } = require("warren-broker");

module.exports = async function globalSetup() {
  if (globalThis.__warren) {
    await globalThis.__warren.stop(); // Jest's globalTeardown
    return undefined;
  }
  const broker = await start();
  globalThis.__warren = broker;
  process.env.AMQP_URL = broker.url;
  process.env.WARREN_MANAGEMENT_URL = broker.managementUrl;
  return () => broker.stop(); // Vitest's teardown
};
