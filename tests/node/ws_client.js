// Node's `ws` client against a txupgrade WebSocket echo endpoint.
//
// Usage: node ws_client.js ws://127.0.0.1:PORT/ws
//
// Sends a text message, a binary message and a 1 MiB binary message, checks
// that each comes back identical and of the same type, then closes with 1000.
// Prints one JSON line describing what happened; exits 0 only if every check
// passed. Bounded: gives up (exit 2) after 20 s.
"use strict";

const { report } = require("./report");
const crypto = require("crypto");
const WebSocket = require("ws");

const url = process.argv[2];
const result = { echoes: [], closeCode: null, closeReason: null, errors: [] };

const finish = report(result, 20);

const messages = [
  { data: "hello from node \u2603", binary: false },
  { data: Buffer.from([...Array(256).keys()]), binary: true },
  { data: crypto.randomBytes(1 << 20), binary: true },
];

const ws = new WebSocket(url, { perMessageDeflate: false });
let next = 0;

function sendNext() {
  const message = messages[next];
  ws.send(message.data, { binary: message.binary });
}

ws.on("open", sendNext);

ws.on("message", (data, isBinary) => {
  const expected = messages[next];
  const same = isBinary
    ? Buffer.compare(Buffer.from(data), Buffer.from(expected.data)) === 0
    : data.toString("utf8") === expected.data;
  result.echoes.push({ length: data.length, binary: isBinary, same: same && isBinary === expected.binary });
  next += 1;
  if (next < messages.length) {
    sendNext();
  } else {
    ws.close(1000, "node done");
  }
});

ws.on("unexpected-response", (request, response) => {
  result.errors.push(`unexpected response ${response.statusCode}`);
  finish(1);
});

ws.on("error", (error) => {
  result.errors.push(String(error));
});

ws.on("close", (code, reason) => {
  result.closeCode = code;
  result.closeReason = reason.toString("utf8");
  const allEchoed =
    result.echoes.length === messages.length && result.echoes.every((echo) => echo.same);
  finish(allEchoed && code === 1000 && result.errors.length === 0 ? 0 : 1);
});
