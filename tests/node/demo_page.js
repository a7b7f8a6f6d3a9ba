// Makes one `echo` switch to the txupgrade daemon at URL (plain TCP or TLS,
// as the URL says), then has headless Chromium (playwright-core) load the
// demo page there and reads its table: what the server saw of the page, its
// WebSocket and the latest echo switch.
//
// Usage: node demo_page.js https://127.0.0.1:PORT/ CHROMIUM_PATH USER_DATA_DIR [SPKI]
//
// With SPKI (the base64 SHA-256 of the test certificate's key), Chromium trusts it. Prints
// one JSON line: echo (what the echo switch answered), title, rows (each
// row's cells by class: http, transport, connection, result), the
// WebSockets Chromium opened, and errors; exits 0 only if the echo came back and the title starts with
// "echo ok:". Bounded: 60 s.
"use strict";

const net = require("net");
const tls = require("tls");
const { report } = require("./report");
const { launchChromium } = require("./chromium");

const [url, executablePath, userDataDir, spki] = process.argv.slice(2);
const result = { echo: null, title: null, rows: {}, sockets: [], errors: [] };
const finish = report(result, 60);

// One HTTP/1.1 `Upgrade: echo` switch: the 101, then "ping" must come back.
function echoSwitch(target) {
  return new Promise((resolve, reject) => {
    const options = { host: target.hostname, port: Number(target.port) };
    const secure = target.protocol === "https:";
    // ALPN http/1.1 only: the switch is an HTTP/1.1 one.
    const socket = secure
      ? tls.connect({ ...options, rejectUnauthorized: false, ALPNProtocols: ["http/1.1"] })
      : net.connect(options);
    let received = Buffer.alloc(0);
    let switched = false;
    socket.setTimeout(10000, () => socket.destroy(new Error("echo switch timed out")));
    socket.on(secure ? "secureConnect" : "connect", () => {
      socket.write(`GET / HTTP/1.1\r\nHost: ${target.host}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n`);
    });
    socket.on("data", (chunk) => {
      received = Buffer.concat([received, chunk]);
      const text = received.toString("latin1");
      const end = text.indexOf("\r\n\r\n");
      if (!switched && end >= 0) {
        switched = true;
        const status = text.slice(0, text.indexOf("\r\n"));
        if (!status.startsWith("HTTP/1.1 101")) {
          socket.destroy();
          reject(new Error(`echo switch answered: ${status}`));
          return;
        }
        received = received.subarray(end + 4);
        socket.write("ping");
      }
      if (switched && received.toString("latin1") === "ping") {
        socket.end();
        resolve("ping");
      }
    });
    socket.on("error", reject);
  });
}

(async () => {
  result.echo = await echoSwitch(new URL(url));
  const extra = spki ? ["--ignore-certificate-errors-spki-list=" + spki] : [];
  const context = await launchChromium(executablePath, userDataDir, extra);
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.on("pageerror", (error) => result.errors.push(`page error: ${error}`));
    page.on("websocket", (socket) => result.sockets.push(socket.url()));
    await page.goto(url, { timeout: 30000 });
    await page.waitForFunction(() => document.title.startsWith("echo") || document.title === "error", null, {
      timeout: 30000,
    });
    result.title = await page.title();
    result.rows = await page.evaluate(() => {
      const rows = {};
      for (const row of document.querySelectorAll("#seen tbody tr")) {
        const cells = {};
        for (const cell of row.querySelectorAll("td")) {
          cells[cell.className.split(" ")[0]] = cell.textContent;
        }
        rows[row.id] = cells;
      }
      return rows;
    });
  } finally {
    await context.close();
  }
  finish(result.echo === "ping" && result.title && result.title.startsWith("echo ok:") ? 0 : 1);
})().catch((error) => {
  result.errors.push(String(error));
  finish(1);
});
