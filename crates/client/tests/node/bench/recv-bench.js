#!/usr/bin/env node
// Receive-side CPU cost of socket.io-client 4.8: the twin of
// crates/client/examples/recv_bench.rs (same server, same stream, same measurement window).
//
//   node recv-bench.js http://127.0.0.1:3000
//
// The server is Tether's bench server: storm(room, n, size) emits n events "tick" with one
// string argument. The stream is asked for in batches of BATCH with at most WINDOW batches
// outstanding (the server's per-client outbox holds 4096 packets).
//
// Environment: N (200000), SIZE (0), BATCH (500), WINDOW (4), TRANSPORT (websocket|polling),
// CLK_TCK (100). CPU time is measured from the first request to the last event, with
// process.cpuUsage() (getrusage: user + sys of every thread, in microseconds) and with
// utime + stime of /proc/self/stat (clock ticks). Prints one line of key=value.
"use strict";

const fs = require("node:fs");
const { io } = require("socket.io-client");

const url = process.argv[2] || "http://127.0.0.1:3000";
const num = (name, dflt) => {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && process.env[name] !== "" && process.env[name] !== undefined ? v : dflt;
};
const N = num("N", 200000);
const SIZE = num("SIZE", 0);
const BATCH = Math.max(1, num("BATCH", 500));
const WINDOW = Math.max(1, num("WINDOW", 4));
const CLK_TCK = Math.max(1, num("CLK_TCK", 100));
const transport = process.env.TRANSPORT === "polling" ? "polling" : "websocket";

function statTicks() {
  const s = fs.readFileSync("/proc/self/stat", "utf8");
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]); // utime + stime: fields 14 and 15 of stat(5)
}

const socket = io(url, { transports: [transport], reconnection: false });
let received = 0;
let requested = 0;
let cpu0, ticks0, t0;

function request() {
  const k = Math.min(BATCH, N - requested);
  if (k > 0) {
    requested += k;
    socket.emit("storm", null, k, SIZE);
  }
}

function done() {
  const cpu = process.cpuUsage(cpu0);
  const ticks = statTicks() - ticks0;
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const cpuUs = cpu.user + cpu.system;
  console.log(
    `client=node messages=${N} cpu_ms=${(cpuUs / 1e3).toFixed(1)} ` +
      `cpu_ns_per_msg=${((cpuUs * 1e3) / N).toFixed(0)} ` +
      `stat_cpu_ms=${Math.round((ticks * 1000) / CLK_TCK)} ` +
      `stat_ns_per_msg=${((ticks * 1e9) / CLK_TCK / N).toFixed(0)} ` +
      `wall_ms=${wallMs.toFixed(1)} msgs_per_s=${((N * 1e3) / wallMs).toFixed(0)}`,
  );
  socket.disconnect();
  process.exit(0);
}

socket.on("tick", () => {
  received++;
  if (received % BATCH === 0) request();
  if (received === N) done();
});

socket.once("connect", () => {
  cpu0 = process.cpuUsage();
  ticks0 = statTicks();
  t0 = process.hrtime.bigint();
  for (let i = 0; i < WINDOW; i++) request();
});

socket.on("connect_error", (e) => {
  console.error(`could not connect to the bench server: ${e.message}`);
  process.exit(1);
});
socket.on("disconnect", (reason) => {
  if (received < N) {
    console.error(`disconnected (${reason}) after ${received} of ${N} events`);
    process.exit(1);
  }
});
setTimeout(() => {
  console.error(`timed out: received ${received} of ${N} events`);
  process.exit(1);
}, 600000).unref();
