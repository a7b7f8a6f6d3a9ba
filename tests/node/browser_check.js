// Headless Chromium (driven by playwright-core) loads the txupgrade demo page
// and waits for its WebSocket echo.
//
// Usage: node browser_check.js http://127.0.0.1:PORT/ CHROMIUM_PATH USER_DATA_DIR
//
// The page opens ws://HOST/ws, sends a message and sets document.title to
// "echo ok: ..." when the echo arrives. Prints one JSON line (title, the
// text of the page's <output>, the WebSocket frames Chromium saw, errors);
// exits 0 only if the title starts with "echo ok:". Bounded: 45 s.
"use strict";

const { report } = require("./report");
const { launchChromium } = require("./chromium");

const [url, executablePath, userDataDir] = process.argv.slice(2);
const result = { title: null, output: null, sockets: [], errors: [] };

const finish = report(result, 45);

(async () => {
  const context = await launchChromium(executablePath, userDataDir);
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.on("pageerror", (error) => result.errors.push(`page error: ${error}`));
    page.on("websocket", (socket) => {
      const seen = { url: socket.url(), sent: [], received: [], closed: false };
      result.sockets.push(seen);
      socket.on("framesent", (frame) => seen.sent.push(String(frame.payload)));
      socket.on("framereceived", (frame) => seen.received.push(String(frame.payload)));
      socket.on("close", () => {
        seen.closed = true;
      });
    });
    await page.goto(url, { timeout: 30000 });
    await page.waitForFunction(() => document.title.startsWith("echo") || document.title === "error", null, {
      timeout: 30000,
    });
    result.title = await page.title();
    result.output = await page.textContent("#ws");
  } finally {
    await context.close();
  }
  finish(result.title && result.title.startsWith("echo ok:") ? 0 : 1);
})().catch((error) => {
  result.errors.push(String(error));
  finish(1);
});
