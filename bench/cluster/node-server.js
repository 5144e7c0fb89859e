// ../shared/bench/CONTRACT.md on socket.io 4.8 with @socket.io/redis-streams-adapter, so two
// Node processes form a cluster through Redis. PORT, CSR=1, ADAPTER=redis://HOST:PORT/DB.
"use strict";
const { Server } = require("socket.io");
const { createClient } = require("redis");
const { createAdapter } = require("@socket.io/redis-streams-adapter");

async function main() {
  const port = Number(process.env.PORT || 3000);
  const csr = process.env.CSR === "1";
  const redis = createClient({ url: process.env.ADAPTER || "redis://127.0.0.1:6379" });
  await redis.connect();
  const io = new Server({
    serveClient: false,
    adapter: createAdapter(redis),
    connectionStateRecovery: csr
      ? { maxDisconnectionDuration: 2 * 60 * 1000, skipMiddlewares: true }
      : undefined,
  });
  const to = (room) => (room === null || room === undefined ? io : io.to(room));
  io.on("connection", (socket) => {
    socket.on("echo", (...args) => {
      const ack = args.pop();
      if (typeof ack === "function") ack(...args);
    });
    socket.on("join", (room, ack) => {
      socket.join(room);
      if (typeof ack === "function") ack();
    });
    socket.on("broadcast", (room, payload, ack) => {
      to(room).emit("tick", payload);
      if (typeof ack === "function") ack();
    });
    socket.on("storm", (room, n, size, ack) => {
      const pad = "x".repeat(size);
      for (let i = 0; i < n; i++) to(room).emit("tick", i + ":" + pad);
      if (typeof ack === "function") ack();
    });
  });
  const http = require("http").createServer();
  io.attach(http);
  http.listen({ port, host: "127.0.0.1", backlog: 1024 });
  console.error(`node cluster node listening on ${port} csr=${csr}`);
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
