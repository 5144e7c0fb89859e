#!/usr/bin/env node
// A Node.js node of a mixed cluster: socket.io 4.8 with
// @socket.io/redis-streams-adapter 0.3 and connection state recovery, serving
// the events of /work/shared/conformance/CONTRACT.md (§5 and `node-id`).
//
//   PORT=3001 ADAPTER=redis://127.0.0.1:6379/7 node node-server.js
//
// It shares the Redis stream `socket.io` and the `sio:session:<pid>` keys with
// Tether nodes (crates/redis implements the adapter's formats).
//
// Differences from a plain `nsp.to(x).emit()` server, on purpose:
// - `emit-numbered` and `emit-to-self` await the adapter's broadcast (XADD,
//   then local delivery) before they ack, the way §6.2 wants acks to follow
//   storage. socket.io's own emit() returns before the XADD completes.
// Everything else is the stock behaviour of socket.io + the adapter (see
// CONTRACT.md §6.6 for where that falls short).
"use strict";

const http = require("node:http");
const os = require("node:os");
const crypto = require("node:crypto");
const { Server } = require("socket.io");
const { createClient } = require("redis");
const { createAdapter } = require("@socket.io/redis-streams-adapter");

const PORT = Number(process.env.PORT || 3000);
const ADAPTER = process.env.ADAPTER || "";
const NODE_ID = `node:${process.env.NODE_NAME || "N"}:${os.hostname()}:${PORT}:${process.pid}:${crypto
  .randomBytes(4)
  .toString("hex")}`;

if (!ADAPTER.startsWith("redis://")) {
  console.error(`node-server: ADAPTER must be redis://HOST:PORT[/DB], got ${JSON.stringify(ADAPTER)}`);
  process.exit(2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const isFn = (f) => typeof f === "function";

async function main() {
  const redis = createClient({ url: ADAPTER });
  redis.on("error", (e) => console.error(`node-server: redis: ${e.message}`));
  await redis.connect();

  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    path: "/socket.io/",
    pingInterval: 25000,
    pingTimeout: 20000,
    maxHttpBufferSize: 1e6,
    connectionStateRecovery: { maxDisconnectionDuration: 120000, skipMiddlewares: true },
    adapter: createAdapter(redis),
  });

  const middlewareRan = new WeakSet();
  const roomsOf = (socket) => [...socket.rooms].filter((r) => r !== socket.id).sort();

  for (const name of ["/", "/custom", "/short"]) {
    const nsp = io.of(name);
    nsp.use((socket, next) => {
      if ((socket.handshake.auth || {}).deny === true) return next(new Error("denied"));
      middlewareRan.add(socket);
      next();
    });
    // A broadcast through the adapter, awaited: stored in the stream, then
    // delivered to this node's sockets.
    const broadcast = (event, args, rooms, flags = {}) =>
      nsp.adapter.broadcast(
        { type: 2, data: [event, ...args], nsp: nsp.name },
        { rooms: new Set(rooms), except: new Set(), flags },
      );

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
        if (obj && typeof obj === "object" && !Array.isArray(obj)) Object.assign(socket.data, obj);
        if (isFn(ack)) ack(socket.data);
      });
      socket.on("emit-to-self", async (payload, ack) => {
        await broadcast("self", [payload], [socket.id]);
        if (isFn(ack)) ack();
      });
      socket.on("emit-numbered", async (opts, ack) => {
        const { to, count, tag, volatile, binary, intervalMs } = opts || {};
        const n = Number.isInteger(count) && count > 0 ? count : 0;
        for (let i = 1; i <= n; i++) {
          if (i > 1 && intervalMs > 0) await sleep(intervalMs);
          const arg = binary ? { tag, i, bin: Buffer.from([i % 256, (i + 1) % 256, (i + 2) % 256]) } : { tag, i };
          await broadcast("numbered", [arg], to !== undefined && to !== null ? [to] : [], volatile ? { volatile: true } : {});
        }
        if (isFn(ack)) ack({ emitted: n });
      });
      socket.on("room-members", (room, ack) => {
        if (!isFn(ack)) return;
        const members = typeof room === "string" ? nsp.adapter.rooms.get(room) : undefined;
        ack(members ? [...members].sort() : []);
      });
      socket.on("kill-transport", () => socket.conn.close());
      socket.on("server-disconnect", () => socket.disconnect(false));
      socket.on("node-id", (ack) => {
        if (isFn(ack)) ack(NODE_ID);
      });

      // Beyond the contract, as in Tether's conformance-server: the operations
      // that reach every node. `{to, except, local, timeoutMs}` select the targets.
      const operator = (p = {}) => {
        let op = nsp;
        if (typeof p.to === "string") op = op.to(p.to);
        if (typeof p.except === "string") op = op.except(p.except);
        if (p.local) op = op.local;
        if (Number.isInteger(p.timeoutMs)) op = op.timeout(p.timeoutMs);
        return op;
      };
      socket.on("fetch-sockets", async (p, ack) => {
        if (!isFn(ack)) return;
        try {
          const found = await operator(p).fetchSockets();
          const ids = found.map((s) => s.id).sort();
          const local = found.filter((s) => nsp.sockets.has(s.id)).map((s) => s.id).sort();
          const sockets = found.map((s) => ({ id: s.id, rooms: [...s.rooms].filter((r) => r !== s.id), data: s.data }));
          ack({ ids, local, sockets });
        } catch (e) {
          ack({ error: e.message });
        }
      });
      socket.on("sockets-join", (p, ack) => {
        operator(p).socketsJoin(p.room);
        if (isFn(ack)) setTimeout(() => ack(), 100);
      });
      socket.on("sockets-leave", (p, ack) => {
        operator(p).socketsLeave(p.room);
        if (isFn(ack)) setTimeout(() => ack(), 100);
      });
      socket.on("disconnect-sockets", (p, ack) => {
        if (isFn(ack)) ack();
        operator(p).disconnectSockets(!!p.close);
      });
      socket.on("broadcast-ack", async (p, ack) => {
        if (!isFn(ack)) return;
        try {
          const answers = await operator({ timeoutMs: 5000, ...p }).emitWithAck("question", ...(p.args || []));
          ack({ answers: answers.map((a) => ({ id: null, answer: [a] })), complete: true });
        } catch (e) {
          ack({ error: e.message });
        }
      });
      socket.on("server-side-emit", (text, ack) => {
        nsp.serverSideEmit("hello", text);
        if (isFn(ack)) ack({ ok: true });
      });
      socket.on("server-side-ping", async (_ms, ack) => {
        if (!isFn(ack)) return;
        try {
          const ids = await nsp.serverSideEmitWithAck("ping"); // the adapter waits 5 s at most
          ack({ ids: ids.sort() });
        } catch (e) {
          ack({ error: e.message });
        }
      });
    });
    nsp.on("ping", (cb) => cb(NODE_ID));
    nsp.on("hello", (text) => nsp.local.emit("node-hello", text));
  }

  // The adapter starts its XREAD ("$") asynchronously; give it a moment so that
  // the node reads every entry appended after it answers `node-id`.
  await sleep(500);
  httpServer.listen(PORT, "127.0.0.1", () => console.log(`node-server listening on http://127.0.0.1:${PORT}`));

  const shutdown = () => {
    // "server shutting down" is recoverable: socket.io persists the sessions
    io.close();
    setTimeout(() => process.exit(0), 500).unref();
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
}

main().catch((e) => {
  console.error(`node-server: ${e.stack || e}`);
  process.exit(1);
});
