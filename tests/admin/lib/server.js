// Starts and stops target/release/admin-server (servers/src/bin/admin-server.rs).
"use strict";

const { spawn, spawnSync } = require("node:child_process");
const path = require("node:path");
const readline = require("node:readline");

const ROOT = path.resolve(__dirname, "../../..");
const BIN = process.env.ADMIN_SERVER_BIN
  || path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "release", "admin-server");
const UI_DIR = path.join(__dirname, "..", "node_modules", "@socket.io", "admin-ui", "ui", "dist");
const REDIS_URL = `redis://${process.env.REDIS_HOST || "127.0.0.1"}:${process.env.REDIS_PORT || 6379}`;
// The test password and its bcrypt hash (bcryptjs.hashSync("changeit", 4)).
const USER = "admin";
const PASSWORD = "changeit";
const HASH = "$2a$04$9y1B7yvs3MLaffC.hCZVxepNug2lDfDsg7ZZlMxDnOlf14So212He";

// Resolves with { proc, url, log } once the server prints its URL.
function start(env = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, [], {
      env: { ...process.env, PORT: "0", HOST: "127.0.0.1", ADMIN_UI_DIR: UI_DIR, ADMIN_STATS_MS: "300", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const log = [];
    const timer = setTimeout(() => reject(new Error(`no URL from ${BIN} within 15 s:\n${log.join("\n")}`)), 15000);
    proc.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.on("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${BIN} exited early (${code ?? signal}):\n${log.join("\n")}`));
    });
    for (const stream of [proc.stdout, proc.stderr]) {
      readline.createInterface({ input: stream }).on("line", (line) => {
        log.push(line);
        if (process.env.SERVER_LOG === "1") process.stderr.write(`[server] ${line}\n`);
        const m = /listening on (http:\/\/\S+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve({ proc, url: m[1], log });
        }
      });
    }
  });
}

async function stop(srv) {
  if (!srv || srv.proc.exitCode !== null || srv.proc.signalCode !== null) return;
  srv.proc.removeAllListeners("exit");
  const done = new Promise((r) => srv.proc.once("exit", r));
  srv.proc.kill("SIGTERM");
  const t = setTimeout(() => srv.proc.kill("SIGKILL"), 5000);
  await done;
  clearTimeout(t);
}

// A cluster of its own (stream and key prefixes) for each run; dropClusters() deletes
// their keys at the end.
const clusters = [];
function clusterEnv(name) {
  const cluster = `${name}-${process.pid}-${Date.now()}`;
  clusters.push(cluster);
  return { ADAPTER: REDIS_URL, CLUSTER_NAME: cluster };
}

function dropClusters() {
  const host = ["-h", process.env.REDIS_HOST || "127.0.0.1", "-p", String(process.env.REDIS_PORT || 6379)];
  for (const c of clusters.splice(0)) {
    const scan = spawnSync("redis-cli", [...host, "--scan", "--pattern", `tether-admin-test:${c}*`], { encoding: "utf8" });
    const keys = (scan.stdout || "").split("\n").filter(Boolean);
    if (keys.length) spawnSync("redis-cli", [...host, "del", ...keys]);
  }
}

// Resolves with the arguments of the next `event` on `socket` that `pred` accepts.
function next(socket, event, pred = () => true, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      socket.off(event, on);
      reject(new Error(`no matching ${event} within ${ms} ms`));
    }, ms);
    function on(...args) {
      if (pred(...args)) {
        clearTimeout(t);
        socket.off(event, on);
        resolve(args);
      }
    }
    socket.on(event, on);
  });
}

module.exports = { start, stop, clusterEnv, dropClusters, next, USER, PASSWORD, HASH, UI_DIR };
