// The official socket.io-client against Tether's TLS listener (driven by ../tls_listener.rs).
//   node client.js URL CA_FILE   (NODE_PATH = tests/interop/node_modules)
// Prints one JSON line with what each scenario saw.
"use strict";
const fs = require("fs");
const { io } = require("socket.io-client");

const [url, caFile] = process.argv.slice(2);
const ca = fs.readFileSync(caFile);

function withTimeout(p, ms, what) {
  return Promise.race([
    p,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: timed out`)), ms)),
  ]);
}

function connected(socket) {
  return new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
}

// Polling first, then the upgrade to wss://; an ack on each transport.
async function pollingThenUpgrade() {
  const socket = io(url, { ca, reconnection: false, forceNew: true });
  let first = null;
  const upgraded = new Promise((resolve) => {
    socket.io.once("open", () => {
      first = socket.io.engine.transport.name;
      socket.io.engine.once("upgrade", resolve);
    });
  });
  try {
    await withTimeout(connected(socket), 10000, "connect");
    const overPolling = await withTimeout(socket.emitWithAck("echo", "over polling"), 10000, "ack");
    await withTimeout(upgraded, 10000, "upgrade");
    const overWs = await withTimeout(socket.emitWithAck("echo", "over wss"), 10000, "ack");
    return { first, overPolling, after: socket.io.engine.transport.name, overWs, id: socket.id };
  } finally {
    socket.close();
  }
}

// WebSocket only (wss:// from the start).
async function websocketOnly() {
  const socket = io(url, { ca, transports: ["websocket"], reconnection: false, forceNew: true });
  try {
    await withTimeout(connected(socket), 10000, "connect");
    const echoed = await withTimeout(socket.emitWithAck("echo", { binary: Buffer.from([1, 2, 3]) }), 10000, "ack");
    return {
      transport: socket.io.engine.transport.name,
      binary: Buffer.isBuffer(echoed.binary) ? [...echoed.binary] : null,
    };
  } finally {
    socket.close();
  }
}

// Without the CA the server's certificate is not trusted: a connect error.
async function withoutTheCa(transports) {
  const socket = io(url, { transports, reconnection: false, forceNew: true });
  try {
    await withTimeout(connected(socket), 10000, "connect");
    return { connected: true };
  } catch (e) {
    // WebSocket: the error is the description; polling (xmlhttprequest-ssl): the
    // request's statusText.
    const cause = e && e.description;
    const xhr = e && e.context && e.context.statusText;
    const detail = (cause && cause.message) || (xhr && (xhr.message || String(xhr))) || "";
    return { connected: false, message: String(e.message), detail: String(detail || "") };
  } finally {
    socket.close();
  }
}

(async () => {
  const out = {
    pollingThenUpgrade: await pollingThenUpgrade(),
    websocketOnly: await websocketOnly(),
    withoutCaPolling: await withoutTheCa(["polling"]),
    withoutCaWebsocket: await withoutTheCa(["websocket"]),
  };
  console.log(JSON.stringify(out));
  process.exit(0);
})().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
