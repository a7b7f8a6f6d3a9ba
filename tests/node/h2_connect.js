// Extended CONNECT (RFC 8441) with Node's own http2 client:
//   node h2_connect.js URL PROTOCOL PAYLOAD
// Connects to URL (http: by prior knowledge, https: by ALPN h2, any
// certificate), waits for the server's SETTINGS, sends CONNECT with
// :protocol PROTOCOL, writes PAYLOAD and ends the stream; prints one JSON
// line: the server's enableConnectProtocol, the status, the bytes received
// (latin1) and how the stream ended.
"use strict";
const http2 = require("node:http2");

const [url, protocol, payload] = process.argv.slice(2);
const session = http2.connect(url, { rejectUnauthorized: false });
const result = { enableConnectProtocol: null, status: null, body: "", ended: null };
const done = (extra) => {
  Object.assign(result, extra);
  console.log(JSON.stringify(result));
  session.destroy();
};
setTimeout(() => done({ ended: "timeout" }), 10000).unref();
session.on("error", (error) => done({ ended: `session error: ${error.code || error.message}` }));
session.once("remoteSettings", (settings) => {
  result.enableConnectProtocol = Boolean(settings.enableConnectProtocol);
  if (!settings.enableConnectProtocol) {
    done({ ended: "no extended CONNECT" });
    return;
  }
  const stream = session.request({
    ":method": "CONNECT",
    ":protocol": protocol,
    ":scheme": url.startsWith("https:") ? "https" : "http",
    ":path": "/",
    ":authority": new URL(url).host,
  });
  stream.on("response", (headers) => {
    result.status = headers[":status"];
  });
  stream.setEncoding("latin1");
  stream.on("data", (chunk) => {
    result.body += chunk;
  });
  stream.on("end", () => done({ ended: "end" }));
  stream.on("error", (error) => done({ ended: `stream error: ${error.code || error.message}` }));
  stream.end(payload);
});
