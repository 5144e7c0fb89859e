#!/usr/bin/env node
// Reference implementation of /work/shared/conformance/CONTRACT.md (§1–5 and
// the `node-id` event of §6.3), single node, in-memory adapter, built on the
// official `socket.io` 4.8 server with connection state recovery.
//
// It exists to validate the interop tests: every test that describes standard
// behaviour must pass against it. Usage:
//
//   PORT=3000 node reference-server.js
//
// Known gaps, on purpose (they are what the reference does, see CONTRACT.md):
//   - no half-open takeover (§4.4): the pid of a silent socket is refused;
//   - sessions are not one-shot: a restored snapshot stays in the session map
//     and can be restored again;
//   - a CONNECT with a pid and no offset never recovers.
"use strict";

const http = require("node:http");
const os = require("node:os");
const crypto = require("node:crypto");
const { Server } = require("socket.io");

const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOST || "127.0.0.1";

const adapter = process.env.ADAPTER;
if (adapter && adapter !== "memory") {
  console.error(`reference-server: unsupported ADAPTER ${JSON.stringify(adapter)} (only memory)`);
  process.exit(2);
}

const NODE_ID = `${os.hostname()}:${PORT}:${process.pid}:${crypto.randomBytes(4).toString("hex")}`;

const httpServer = http.createServer();
const io = new Server(httpServer, {
  path: "/socket.io/",
  pingInterval: 25000,
  pingTimeout: 20000,
  maxHttpBufferSize: 1e6,
  connectionStateRecovery: {
    maxDisconnectionDuration: 2 * 60 * 1000,
    skipMiddlewares: true,
  },
});

const WINDOWS = { "/": 120000, "/custom": 120000, "/short": 2000 };

// The mark of §3 lives on the socket instance only; it is never part of
// socket.data and so is never restored.
const middlewareRan = new WeakSet();

function roomsOf(socket) {
  return [...socket.rooms].filter((r) => r !== socket.id).sort();
}

function isFn(f) {
  return typeof f === "function";
}

function setup(nsp, windowMs) {
  // SessionAwareAdapter reads maxDisconnectionDuration at construction time
  // from the server-wide option; override it per namespace.
  nsp.adapter.maxDisconnectionDuration = windowMs;

  nsp.use((socket, next) => {
    const auth = socket.handshake.auth || {};
    if (auth.deny === true) {
      const err = new Error("denied");
      err.data = { reason: "auth.deny was true" };
      return next(err);
    }
    middlewareRan.add(socket);
    next();
  });

  nsp.on("connection", (socket) => {
    socket.on("echo", (...args) => {
      if (args.length && isFn(args[args.length - 1])) {
        const ack = args.pop();
        ack(...args);
      } else {
        socket.emit("echo", ...args);
      }
    });

    socket.on("whoami", (ack) => {
      if (!isFn(ack)) return;
      ack({
        id: socket.id,
        nsp: nsp.name,
        recovered: !!socket.recovered,
        middlewareRan: middlewareRan.has(socket),
        rooms: roomsOf(socket),
        data: socket.data,
        transport: socket.conn.transport.name,
      });
    });

    socket.on("join", (room, ack) => {
      if (typeof room === "string") socket.join(room);
      if (isFn(ack)) ack(roomsOf(socket));
    });

    socket.on("leave", (room, ack) => {
      if (typeof room === "string") socket.leave(room);
      if (isFn(ack)) ack(roomsOf(socket));
    });

    socket.on("set-data", (obj, ack) => {
      if (obj && typeof obj === "object" && !Array.isArray(obj)) {
        Object.assign(socket.data, obj);
      }
      if (isFn(ack)) ack(socket.data);
    });

    socket.on("emit-to-self", (payload, ack) => {
      socket.emit("self", payload);
      if (isFn(ack)) ack();
    });

    socket.on("emit-numbered", (opts, ack) => {
      const { to, count, tag, volatile, binary, intervalMs } = opts || {};
      const n = Number.isInteger(count) && count > 0 ? count : 0;
      const emitOne = (i) => {
        let op = to !== undefined && to !== null ? nsp.to(to) : nsp;
        if (volatile) op = op.volatile;
        const arg = binary
          ? { tag, i, bin: Buffer.from([i % 256, (i + 1) % 256, (i + 2) % 256]) }
          : { tag, i };
        op.emit("numbered", arg);
      };
      const done = () => {
        if (isFn(ack)) ack({ emitted: n });
      };
      if (intervalMs > 0 && n > 0) {
        let i = 1;
        const tick = () => {
          emitOne(i);
          if (i >= n) return done();
          i++;
          setTimeout(tick, intervalMs);
        };
        tick();
      } else {
        for (let i = 1; i <= n; i++) emitOne(i);
        done();
      }
    });

    socket.on("room-members", (room, ack) => {
      if (!isFn(ack)) return;
      const members = typeof room === "string" ? nsp.adapter.rooms.get(room) : undefined;
      ack(members ? [...members].sort() : []);
    });

    socket.on("kill-transport", () => {
      // engine.io closes the WebSocket, or for polling sends a `close` packet
      // and ends the session; socket.io sees "forced close" (recoverable).
      socket.conn.close();
    });

    socket.on("server-disconnect", () => {
      socket.disconnect(false);
    });

    socket.on("node-id", (ack) => {
      if (isFn(ack)) ack(NODE_ID);
    });
  });
}

for (const [name, windowMs] of Object.entries(WINDOWS)) setup(io.of(name), windowMs);

httpServer.listen(PORT, HOST, () => {
  console.log(`listening on http://${HOST}:${PORT}`);
});

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  console.log(`reference-server: ${signal}, shutting down`);
  setTimeout(() => process.exit(0), 2000).unref();
  io.close(() => process.exit(0));
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
