// Headless Chromium (playwright-core) as the Node scripts here launch it.
"use strict";

const { chromium } = require("playwright-core");

// Chromium's switches for a test run: no sandbox, GPU, QUIC, first-run or background traffic.
const ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

// A headless persistent context in userDataDir of the Chromium at
// executablePath, with ARGS and then the `extra` switches; 30 s to start.
function launchChromium(executablePath, userDataDir, extra = []) {
  return chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    timeout: 30000,
    args: [...ARGS, ...extra],
  });
}

module.exports = { ARGS, launchChromium };
