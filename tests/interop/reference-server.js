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
//
// REFERENCE_STRICT=1 patches those three gaps (heartbeat probe of a live
// holder bounded at 2 s, one-shot sessions, pid-without-offset replays
// everything since the socket connected). It is not the reference any more:
// it only exists to check that the Tether-only tests are themselves right,
// e.g. `REFERENCE_STRICT=1 RUN_ALL=1 TARGET=reference bash run.sh`.
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

  nsp.on("connection", (rawSocket) => {
    // Every handler is guarded: a hostile payload (say, a 20000-deep array
    // echoed back) makes socket.io's encoder overflow the stack, which would
    // otherwise crash the process.
    const socket = new Proxy(rawSocket, {
      get(target, prop) {
        if (prop === "on") {
          return (event, handler) =>
            target.on(event, (...args) => {
              try {
                handler(...args);
              } catch (e) {
                console.error(`reference-server: handler ${event} failed: ${e && e.message}`);
                target.conn.close();
              }
            });
        }
        const v = target[prop];
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
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
        middlewareRan: middlewareRan.has(rawSocket),
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

for (const [name, windowMs] of Object.entries(WINDOWS)) {
  const nsp = io.of(name);
  setup(nsp, windowMs);
  if (process.env.REFERENCE_STRICT === "1") strict(nsp);
}

// ---------------------------------------------------------------------------
// REFERENCE_STRICT=1: the three §4.4 behaviours the reference lacks.

function strict(nsp) {
  const { Socket } = require("socket.io");
  const adapter = nsp.adapter;
  // pid -> id of the last stored packet when the socket connected (null: none)
  const startIds = new Map();

  nsp.on("connection", (socket) => {
    if (!socket.recovered) {
      const last = adapter.packets[adapter.packets.length - 1];
      startIds.set(socket.pid, last ? last.id : null);
    }
  });

  const probe = (conn, ms) =>
    new Promise((resolve) => {
      if (conn.readyState !== "open") return resolve(false);
      const ok = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        conn.off("heartbeat", ok);
        resolve(false);
      }, ms);
      conn.once("heartbeat", ok);
      conn.sendPacket("ping");
    });

  const included = (rooms, opts) =>
    (opts.rooms.size === 0 || rooms.some((r) => opts.rooms.has(r))) && rooms.every((r) => !opts.except.has(r));

  const restore = (pid, offset) => {
    const session = adapter.sessions.get(pid);
    if (!session) return null;
    if (session.disconnectedAt + adapter.maxDisconnectionDuration < Date.now()) {
      adapter.sessions.delete(pid);
      return null;
    }
    let start;
    if (offset === undefined) {
      if (!startIds.has(pid)) return null;
      const startId = startIds.get(pid);
      start = startId === null ? 0 : adapter.packets.findIndex((p) => p.id === startId) + 1;
      if (startId !== null && start === 0) return null;
    } else {
      const i = adapter.packets.findIndex((p) => p.id === offset);
      if (i === -1) return null;
      start = i + 1;
    }
    const missedPackets = adapter.packets
      .slice(start)
      .filter((p) => included(session.rooms, p.opts))
      .map((p) => p.data);
    adapter.sessions.delete(pid); // one-shot
    return { ...session, missedPackets };
  };

  nsp._createSocket = async function (client, auth) {
    const { pid, offset } = auth || {};
    if (typeof pid === "string" && pid && (typeof offset === "string" || offset === undefined)) {
      const holder = [...nsp.sockets.values()].find((s) => s.pid === pid);
      if (holder) {
        if (await probe(holder.conn, 2000)) return new Socket(nsp, client, auth);
        holder.conn.close(true); // "forced close": recoverable, persists the session
      }
      const session = restore(pid, offset);
      if (session) return new Socket(nsp, client, auth, session);
    }
    return new Socket(nsp, client, auth);
  };
}

httpServer.listen(PORT, HOST, () => {
  console.log(`listening on http://${HOST}:${PORT}`);
});

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  console.log(`reference-server: ${signal}, shutting down`);
  // engine.io closes every connection without a DISCONNECT packet
  // ("server shutting down", recoverable); give the close frames / close
  // packets a moment to go out, then leave (idle polling sessions and
  // keep-alive sockets would otherwise delay the exit).
  io.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 300).unref();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
