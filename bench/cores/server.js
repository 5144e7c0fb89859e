// ../shared/bench/CONTRACT.md on every core the Node.js way: a node:cluster primary that owns
// the port and routes connections with @socket.io/sticky, and WORKERS (default 2) socket.io 4.8
// workers joined by @socket.io/cluster-adapter (the setup of both packages' READMEs).
// Env: PORT (3000), HOST (127.0.0.1), CSR=1 asks for connection state recovery (2 min,
// skipMiddlewares), WORKERS. The primary starts listening once every worker is ready.
// STICKY=0 drops @socket.io/sticky and lets node:cluster hand out the connections itself
// (the workers listen on the shared port): enough for WebSocket-only clients, as sticky's
// README says, but not for long-polling.
// CPU and RSS are those of the primary plus the workers (its child processes).
"use strict";
const cluster = require("node:cluster");
const http = require("node:http");

const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || "127.0.0.1";
const csr = process.env.CSR === "1";
const workers = Number(process.env.WORKERS || 2);
const sticky = process.env.STICKY !== "0";

if (cluster.isPrimary) {
  const { setupMaster } = require("@socket.io/sticky");
  const { setupPrimary } = require("@socket.io/cluster-adapter");
  const httpServer = http.createServer();
  if (sticky) setupMaster(httpServer, { loadBalancingMethod: "least-connection" });
  setupPrimary();
  cluster.setupPrimary({ serialization: "advanced" });
  let ready = 0;
  const v = require("./node_modules/socket.io/package.json").version;
  const hello = () =>
    console.error(`node socket.io ${v} cluster: primary ${process.pid}, ${workers} workers, port ${port}, csr=${csr}, sticky=${sticky}`);
  cluster.on("message", (_worker, msg) => {
    if (msg && msg.type === "bench:ready" && ++ready === workers) {
      if (sticky) httpServer.listen({ port, host, backlog: 1024 }, hello);
      else hello();
    }
  });
  // A dead worker ends the bench: its clients are gone, the figures would be wrong.
  cluster.on("exit", (w, code) => {
    console.error(`worker ${w.process.pid} exited (${code})`);
    process.exit(1);
  });
  for (let i = 0; i < workers; i++) cluster.fork();
  const stop = () => {
    for (const id in cluster.workers) cluster.workers[id].process.kill("SIGTERM");
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
} else {
  const { Server } = require("socket.io");
  const { createAdapter } = require("@socket.io/cluster-adapter");
  const { setupWorker } = require("@socket.io/sticky");
  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    serveClient: false,
    connectionStateRecovery: csr
      ? { maxDisconnectionDuration: 2 * 60 * 1000, skipMiddlewares: true }
      : undefined,
  });
  io.adapter(createAdapter());
  if (sticky) setupWorker(io);
  const to = (room) => (room === null || room === undefined ? io : io.to(room));
  io.on("connection", (socket) => {
    socket.on("echo", (...args) => {
      const ack = args[args.length - 1];
      if (typeof ack === "function") {
        args.pop();
        ack(...args);
      }
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
      const target = to(room);
      const pad = "x".repeat(size);
      for (let i = 0; i < n; i++) target.emit("tick", i + ":" + pad);
      if (typeof ack === "function") ack();
    });
  });
  process.on("SIGTERM", () => process.exit(0));
  if (sticky) process.send({ type: "bench:ready" });
  else httpServer.listen({ port, host, backlog: 1024 }, () => process.send({ type: "bench:ready" }));
}
