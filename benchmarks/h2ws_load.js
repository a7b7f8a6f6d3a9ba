// The load generator of bench_h2_websocket.py: WebSockets over HTTP/2
// (RFC 8441 extended CONNECT, Node's built-in http2 on cleartext prior
// knowledge) or over their own HTTP/1.1 connections (raw sockets, RFC 6455
// frames masked once before the clock starts). Node built-ins only.
//
//   node h2ws_load.js CONFIG_JSON
//
// CONFIG: {mode: "handshake" | "echo" | "idle", transport: "h2" | "h1",
// port, path, concurrency, seconds, maxCount, warmup, size, count}.
//
// Line protocol (stdout: one JSON object a line; stdin: one word a line):
//   handshake, echo: sets up, runs `warmup` operations, prints
//     {"ready": true}; on "go" counts what completes for `seconds` (or up to
//     `maxCount`), then prints {"done", "failures", "failure", "wall"} and exits.
//   idle: opens `count` WebSockets (h2: as many per connection as the
//     server's SETTINGS_MAX_CONCURRENT_STREAMS allows, at most
//     `concurrency`), prints {"open", "connections"}; on "close" closes them
//     all, prints {"closed": true} and exits.
// An error that a broken server would cause (a wrong status, a wrong echo)
// prints {"error": "..."} and exits 1: a broken server must not look fast.
// Bounded: exits by itself after `seconds` + 60 s.
"use strict";
const crypto = require("node:crypto");
const http2 = require("node:http2");
const net = require("node:net");

const config = JSON.parse(process.argv[2]);
const HOST = "127.0.0.1";
const KEY = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT = crypto
  .createHash("sha1")
  .update(KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
  .digest("base64");
const MASK = crypto.randomBytes(4);

function say(object) {
  process.stdout.write(JSON.stringify(object) + "\n");
}

function fail(message) {
  say({ error: String(message) });
  process.exit(1);
}

setTimeout(() => fail("timed out"), ((config.seconds || 10) + 60) * 1000).unref();

// One final client frame (RFC 6455 §5.2), masked with MASK.
function maskedFrame(opcode, payload) {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, 0x80 | n]) : Buffer.from([0x80 | opcode, 0x80 | 126, n >> 8, n & 255]);
  const body = Buffer.alloc(n);
  for (let i = 0; i < n; i++) body[i] = payload[i] ^ MASK[i % 4];
  return Buffer.concat([head, MASK, body]);
}

function serverFrame(opcode, payload) {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, n]) : Buffer.from([0x80 | opcode, 126, n >> 8, n & 255]);
  return Buffer.concat([head, payload]);
}

const CLOSE = maskedFrame(8, Buffer.from([0x03, 0xe8]));
const PAYLOAD = crypto.randomBytes(config.size || 32);
const MESSAGE = maskedFrame(2, PAYLOAD);
const ECHO = serverFrame(2, PAYLOAD);
const REQUEST = Buffer.from(
  `GET ${config.path} HTTP/1.1\r\nHost: ${HOST}:${config.port}\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  "latin1",
);
const CONNECT = {
  ":method": "CONNECT",
  ":protocol": "websocket",
  ":scheme": "http",
  ":path": config.path,
  ":authority": `${HOST}:${config.port}`,
  "sec-websocket-version": "13",
};

// -- HTTP/2 ------------------------------------------------------------------

// A session whose server offers extended CONNECT: resolve(session, maxStreams).
function h2Session() {
  return new Promise((resolve) => {
    const session = http2.connect(`http://${HOST}:${config.port}`, {
      settings: { enablePush: false, initialWindowSize: 1 << 20 },
      peerMaxConcurrentStreams: 1000,
    });
    session.on("error", (error) => fail(`session error: ${error.code || error.message}`));
    session.on("goaway", (code, last) => {
      if (!counter.stopped) fail(`the server sent GOAWAY (${code}, last stream ${last})`);
    });
    session.on("close", () => {
      if (!counter.stopped && !session.closing) fail("the server closed the HTTP/2 connection");
    });
    session.once("remoteSettings", (settings) => {
      if (!settings.enableConnectProtocol) fail("the server does not offer extended CONNECT");
      resolve(session, settings.maxConcurrentStreams);
    });
  });
}

// A WebSocket's handle on `transport` (an HTTP/2 stream or a TCP socket):
// what it received, and how to send, close (a masked Close) and destroy it.
function webSocketOn(transport) {
  return {
    received: [],
    receivedLength: 0,
    send: (data) => transport.write(data),
    close: () => transport.write(CLOSE),
    destroy: () => transport.destroy(),
  };
}

// One WebSocket on a stream of `session`; calls opened(ws) on the 200 and
// closed() when the stream is done both ways.
function h2Socket(session, handlers) {
  const stream = session.request(CONNECT, { endStream: false });
  const ws = webSocketOn(stream);
  stream.on("response", (headers) => {
    if (headers[":status"] !== 200) fail(`CONNECT answered ${headers[":status"]}`);
    handlers.opened(ws);
  });
  stream.on("data", (chunk) => {
    ws.received.push(chunk);
    ws.receivedLength += chunk.length;
    if (handlers.data) handlers.data(ws);
  });
  stream.on("end", () => {
    ws.ended = true;
    if (!stream.closed) stream.end();
  });
  stream.on("error", (error) => {
    ws.error = error.code || error.message;
  });
  stream.on("close", () => handlers.closed(ws));
  return ws;
}

// -- HTTP/1.1 ----------------------------------------------------------------

// One WebSocket on its own connection: opened(ws) after the 101, closed(ws)
// once the server closed TCP.
function h1Socket(handlers, checkAccept) {
  const socket = net.connect({ host: HOST, port: config.port, noDelay: true });
  let head = Buffer.alloc(0);
  let open = false;
  const ws = webSocketOn(socket);
  socket.on("connect", () => socket.write(REQUEST));
  socket.on("data", (chunk) => {
    if (!open) {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      const text = head.subarray(0, end).toString("latin1");
      if (!text.startsWith("HTTP/1.1 101 ")) fail(`expected a 101, got ${JSON.stringify(text.slice(0, 200))}`);
      if (checkAccept && !text.toLowerCase().includes(`sec-websocket-accept: ${ACCEPT.toLowerCase()}`)) {
        fail(`wrong or missing Sec-WebSocket-Accept: ${JSON.stringify(text)}`);
      }
      open = true;
      chunk = head.subarray(end + 4);
      handlers.opened(ws);
      if (!chunk.length) return;
    }
    ws.received.push(chunk);
    ws.receivedLength += chunk.length;
    if (handlers.data) handlers.data(ws);
  });
  socket.on("end", () => {
    ws.ended = true;
  });
  socket.on("error", (error) => {
    ws.error = error.code || error.message;
  });
  socket.on("close", () => handlers.closed(ws));
  return ws;
}

function received(ws) {
  const data = ws.received.length === 1 ? ws.received[0] : Buffer.concat(ws.received);
  ws.received = [];
  ws.receivedLength = 0;
  return data;
}

// -- The window --------------------------------------------------------------

const counter = { counting: false, done: 0, failures: 0, failure: "", start: 0, warm: 0, stopped: false };

function waitFor(word) {
  return new Promise((resolve) => {
    let text = "";
    const onData = (chunk) => {
      text += chunk;
      if (text.split("\n").some((line) => line.trim() === word)) {
        process.stdin.off("data", onData);
        resolve();
      }
    };
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", onData);
  });
}

function window(onReady) {
  say({ ready: true });
  waitFor("go").then(() => {
    counter.counting = true;
    counter.start = performance.now();
    setTimeout(finish, config.seconds * 1000);
    if (onReady) onReady();
  });
}

// One more operation completed: counted during the window; true to go on.
function completed(ok, why) {
  if (!counter.counting) {
    counter.warm += 1;
    return !counter.stopped;
  }
  if (ok) counter.done += 1;
  else {
    counter.failures += 1;
    counter.failure = counter.failure || why;
  }
  if (counter.done >= config.maxCount) finish();
  return !counter.stopped;
}

function finish() {
  if (counter.stopped) return;
  counter.stopped = true;
  const wall = (performance.now() - counter.start) / 1000;
  say({ done: counter.done, failures: counter.failures, failure: counter.failure, wall });
  process.exit(0);
}

// -- Modes -------------------------------------------------------------------

// New WebSockets, `concurrency` in flight: open, close handshake, end.
async function handshakes() {
  const session = config.transport === "h2" ? await h2Session() : null;
  let readySaid = false;
  const handlers = {
    opened: (ws) => ws.close(),
    // Over HTTP/2 the server's Close ends the WebSocket: the client then
    // resets the stream (RST_STREAM NO_ERROR, as a TCP close), whether or
    // not the server sent END_STREAM (txupgrade does, hypercorn 0.18 never
    // does, and takes a later DATA or END_STREAM on that stream for a
    // connection error).
    data: (ws) => {
      if (session && ws.receivedLength >= 2 && ws.received[0][0] === 0x88) ws.destroy();
    },
    closed: (ws) => {
      const data = received(ws);
      const ok = (session || ws.ended) && data.length >= 2 && data[0] === 0x88;
      if (!completed(ok, ok ? "" : `no close frame before the end (${ws.error || "no error"})`)) return;
      if (!readySaid && counter.warm >= config.warmup) {
        readySaid = true;
        window();
      }
      open();
    },
  };
  const open = () => (session ? h2Socket(session, handlers) : h1Socket(handlers, false));
  for (let i = 0; i < config.concurrency; i++) open();
}

// `concurrency` established WebSockets, each ping-ponging one message.
async function echoes() {
  const session = config.transport === "h2" ? await h2Session() : null;
  let opened = 0;
  let readySaid = false;
  const handlers = {
    opened: (ws) => {
      opened += 1;
      ws.send(MESSAGE);
    },
    data: (ws) => {
      if (ws.receivedLength < ECHO.length) return;
      const data = received(ws);
      if (!data.equals(ECHO)) fail(`bad echo: ${data.subarray(0, 40).toString("hex")}`);
      if (!completed(true, "")) return;
      if (!readySaid && opened === config.concurrency && counter.warm >= config.warmup) {
        readySaid = true;
        window();
      }
      ws.send(MESSAGE);
    },
    closed: (ws) => {
      if (!counter.stopped) fail(`a WebSocket closed during the echoes (${ws.error || "no error"})`);
    },
  };
  for (let i = 0; i < config.concurrency; i++) {
    if (session) h2Socket(session, handlers);
    else h1Socket(handlers, i === 0);
  }
}

// `count` WebSockets opened, then left idle until "close".
async function idle() {
  const sockets = [];
  let opened = 0;
  let connections = 0;
  let closing = false;
  const handlers = {
    opened: () => {
      opened += 1;
      if (opened === config.count) {
        say({ open: opened, connections });
        waitFor("close").then(() => {
          closing = true;
          for (const ws of sockets) ws.destroy();
          for (const session of sessions) session.close();
          say({ closed: true });
          process.exit(0);
        });
      }
    },
    closed: (ws) => {
      if (!closing) fail(`an idle WebSocket closed (${ws.error || "no error"})`);
    },
  };
  const sessions = [];
  if (config.transport === "h2") {
    while (sockets.length < config.count) {
      const session = await h2Session();
      sessions.push(session);
      connections += 1;
      const most = Math.min(config.concurrency, session.remoteSettings.maxConcurrentStreams);
      for (let i = 0; i < most && sockets.length < config.count; i++) sockets.push(h2Socket(session, handlers));
    }
  } else {
    // At most `concurrency` connecting at once: a burst of thousands of SYNs
    // would overflow the server's backlog.
    connections = config.count;
    let started = 0;
    const more = () => {
      while (started < config.count && started - opened < config.concurrency) {
        started += 1;
        sockets.push(h1Socket({ ...handlers, opened: (ws) => (handlers.opened(ws), more()) }, started === 1));
      }
    };
    more();
  }
}

({ handshake: handshakes, echo: echoes, idle })[config.mode]().catch((error) => fail(error.stack || error));
