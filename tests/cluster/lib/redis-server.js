// A redis-server of a test's own, for the tests that restart the engine for real
// (never the shared Redis on REDIS_PORT, which other test files use). Spawned as a
// child process on a free port, in the foreground; `kill()` = SIGKILL, `start()`
// again = restart on the same port and, with `persist`, the same directory (AOF,
// fsync on every write). It is killed and its directory removed by `destroy()`, and
// killed at exit whatever happens.
//
// A missing redis-server is an error with a clear message, never a skip.
"use strict";

const { spawn, spawnSync } = require("node:child_process");
const fs = require("node:fs");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");

const BIN = process.env.REDIS_SERVER_BIN || "redis-server";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const live = new Set();
process.on("exit", () => {
  for (const child of live) {
    try {
      child.kill("SIGKILL");
    } catch {}
  }
});

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// The first line of the reply to a RESP PING ("+PONG", "-LOADING …"), or null.
function ping(port, ms = 1000) {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port });
    let buf = "";
    const done = (v) => {
      s.removeAllListeners();
      s.on("error", () => {});
      s.destroy();
      resolve(v);
    };
    s.setTimeout(ms, () => done(null));
    s.once("error", () => done(null));
    s.once("connect", () => s.write("PING\r\n"));
    s.on("data", (d) => {
      buf += d.toString();
      const nl = buf.indexOf("\r\n");
      if (nl >= 0) done(buf.slice(0, nl));
    });
  });
}

function checkInstalled() {
  const r = spawnSync(BIN, ["--version"], { encoding: "utf8" });
  if (r.error || r.status !== 0) {
    throw new Error(
      `${BIN} is needed: this test starts and restarts a Redis of its own ` +
        `(apt-get install redis-server, or set REDIS_SERVER_BIN): ${r.error ? r.error.message : r.stderr}`,
    );
  }
  return r.stdout.trim();
}

class RedisServer {
  // persist: AOF with an fsync on every write, in a directory kept across restarts.
  constructor({ persist = false, name = "redis" } = {}) {
    this.persist = persist;
    this.name = name;
    this.version = checkInstalled();
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "tether-redis-restart-"));
    this.port = null;
    this.child = null;
    this.out = "";
    this.starts = 0;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  isAlive() {
    return !!this.child && !this.exited;
  }

  async start(timeoutMs = 10000) {
    if (this.isAlive()) throw new Error(`${this.name} is already running`);
    if (!this.port) this.port = await freePort();
    this.starts++;
    const args = [
      "--port", String(this.port),
      "--bind", "127.0.0.1",
      "--daemonize", "no",
      "--save", "",
      "--dir", this.dir,
      "--logfile", "",
      ...(this.persist ? ["--appendonly", "yes", "--appendfsync", "always"] : ["--appendonly", "no"]),
    ];
    this.exited = null;
    const child = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    live.add(child);
    const keep = (chunk) => {
      this.out += chunk.toString().replace(/^/gm, `[${this.name}#${this.starts}] `);
      if (this.out.length > 128 * 1024) this.out = this.out.slice(-64 * 1024);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    this.exitP = new Promise((resolve) => {
      const onExit = (code, signal) => {
        this.exited = { code, signal, at: Date.now() };
        live.delete(child);
        resolve(this.exited);
      };
      child.once("exit", onExit);
      child.once("error", (e) => onExit(null, String(e)));
    });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.exited) {
        throw new Error(`${this.name} exited at start (${JSON.stringify(this.exited)})\n${this.out}`);
      }
      if ((await ping(this.port)) === "+PONG") return this;
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`${this.name} does not answer PING on port ${this.port} within ${timeoutMs} ms\n${this.out}`);
      }
      await sleep(20);
    }
  }

  // SIGKILL: a crash (with `persist`, every acknowledged write is in the AOF).
  async kill() {
    if (!this.isAlive()) return this.exited;
    this.child.kill("SIGKILL");
    return this.exitP;
  }

  async destroy() {
    await this.kill();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  log() {
    return this.out;
  }
}

module.exports = { RedisServer };
