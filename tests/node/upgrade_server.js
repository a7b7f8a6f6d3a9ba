// A Node `http` server that switches to an `echo` protocol in its 'upgrade'
// event: the server side that txupgrade's client is tested against.
//
// Usage: node upgrade_server.js   (prints the port it listens on, on 127.0.0.1)
//
// After the 101 it writes "[node URL]", then echoes every byte; it answers a
// plain request 426 naming `echo`, and an offer without `echo` 400. It exits
// when its standard input closes, and after 60 s in any case.
"use strict";

const http = require("http");

const server = http.createServer((req, res) => {
  res.writeHead(426, { Upgrade: "echo", Connection: "Upgrade", "Content-Type": "text/plain" });
  res.end("upgrade required\n");
});

server.on("upgrade", (req, socket, head) => {
  const offered = (req.headers.upgrade || "").split(",").map((p) => p.trim().toLowerCase());
  if (!offered.includes("echo")) {
    socket.end("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    return;
  }
  socket.write(
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n[node " + req.url + "]"
  );
  if (head.length) socket.write(head);
  socket.on("data", (data) => socket.write(data));
  socket.on("end", () => socket.end());
  socket.on("error", () => socket.destroy());
});

server.listen(0, "127.0.0.1", () => process.stdout.write(server.address().port + "\n"));
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 60000).unref();
