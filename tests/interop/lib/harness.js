// Test harness for the Tether interop suite.
//
// - startServer(): spawns the server under test (`/bin/sh -c "$SERVER_CMD"`,
//   default <repo>/scripts/conformance-server) in its own process group with
//   PORT set to a free port, waits until the port accepts TCP connections, and
//   kills the whole group on teardown. With SERVER_URL set, no process is
//   spawned and that server is used instead (handy when debugging).
// - useServer(): registers before/after/afterEach hooks for a test file.
// - connect()/connectError()/recoverAs(): promise-based socket.io-client
//   wrappers with timeouts; every socket made through them is closed after each
//   test.
// - ack(): emit with an acknowledgement and a timeout.
// - collect(): event collector with waitFor().
// - TcpProxy: a proxy that can cut (RST) or blackhole connections.
// - tetherOnly(): a test that the Node.js reference does not pass on purpose;
//   skipped when TARGET=reference (unless RUN_ALL=1).
"use strict";

const { spawn } = require("node:child_process");
const net = require("node:net");
const fs = require("node:fs");
const path = require("node:path");
const assert = require("node:assert/strict");
const nodeTest = require("node:test");
const { before, after, afterEach } = nodeTest;
const { io, Manager } = require("socket.io-client");

const REPO = path.resolve(__dirname, "..", "..", "..");
const HOST = process.env.SERVER_HOST || "127.0.0.1";
const IS_REFERENCE = process.env.TARGET === "reference";
const RUN_ALL = process.env.RUN_ALL === "1";
const START_TIMEOUT_MS = Number(process.env.SERVER_START_TIMEOUT_MS || 120000);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// a sleep that does not keep the process alive
const sleepUnref = (ms) => new Promise((r) => setTimeout(r, ms).unref());

function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------
// Server process

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    const done = (ok) => {
      s.removeAllListeners();
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
}

const liveGroups = new Set();
function killLiveGroups() {
  for (const pid of liveGroups) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {}
  }
}
process.on("exit", killLiveGroups);
// The test runner stops a file that overruns with a signal: do not leave the
// server behind then either.
for (const [sig, n] of [["SIGTERM", 15], ["SIGINT", 2], ["SIGHUP", 1]]) {
  process.once(sig, () => {
    killLiveGroups();
    process.exit(128 + n);
  });
}

async function startServer() {
  if (process.env.SERVER_URL) {
    const url = process.env.SERVER_URL.replace(/\/$/, "");
    const port = Number(new URL(url).port);
    return { url, port, stop: async () => {}, log: () => "" };
  }
  const cmd = process.env.SERVER_CMD || path.join(REPO, "scripts", "conformance-server");
  const port = await freePort();
  const child = spawn("/bin/sh", ["-c", cmd], {
    cwd: REPO,
    env: { ...process.env, PORT: String(port) },
    detached: true, // own process group, so the whole tree can be killed
    stdio: ["ignore", "pipe", "pipe"],
  });
  liveGroups.add(child.pid);
  let out = "";
  const keep = (chunk) => {
    out += chunk.toString();
    if (out.length > 64 * 1024) out = out.slice(-32 * 1024);
    if (process.env.SERVER_LOG === "1") process.stderr.write(chunk);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  let exited = null;
  const exitP = new Promise((resolve) =>
    child.once("exit", (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    }),
  );

  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (exited) {
      throw new Error(
        `server exited before listening (${JSON.stringify(exited)}): ${cmd}\n--- server output ---\n${out}`,
      );
    }
    if (await canConnect(port)) break;
    if (Date.now() > deadline) {
      killGroup(child.pid, "SIGKILL");
      throw new Error(`server did not listen on ${HOST}:${port} within ${START_TIMEOUT_MS} ms\n${out}`);
    }
    await sleep(100);
  }

  // SIGTERM to the whole group, wait until every process of the group is gone
  // (the shell may exit before the server it started), SIGKILL after graceMs.
  const stop = async (graceMs = 5000) => {
    const t0 = Date.now();
    killGroup(child.pid, "SIGTERM");
    let graceful = await groupGone(child.pid, graceMs);
    if (!graceful) {
      killGroup(child.pid, "SIGKILL");
      await groupGone(child.pid, 3000);
    }
    liveGroups.delete(child.pid);
    await Promise.race([exitP, sleepUnref(1000)]);
    return { graceful, ms: Date.now() - t0, shell: exited };
  };
  return {
    url: `http://${HOST}:${port}`,
    port,
    stop,
    log: () => out,
    isAlive: () => !exited,
  };
}

// Does the process group still hold a process that is not a zombie? (An
// orphaned zombie is reaped by PID 1 only when it gets to it, which may take a
// while in a container, and kill(-pgid, 0) still counts it.)
function groupAlive(pgid) {
  try {
    process.kill(-pgid, 0);
  } catch (e) {
    if (e.code === "ESRCH") return false;
  }
  let entries;
  try {
    entries = fs.readdirSync("/proc");
  } catch {
    return true; // no /proc: trust kill()
  }
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    let stat;
    try {
      stat = fs.readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue;
    }
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // rest[0] = state, rest[1] = ppid, rest[2] = pgrp
    if (Number(rest[2]) === pgid && rest[0] !== "Z" && rest[0] !== "X") return true;
  }
  return false;
}

async function groupGone(pgid, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (!groupAlive(pgid)) return true;
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
}

function killGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {}
}

// ---------------------------------------------------------------------------
// Clients

const tracked = new Set(); // sockets and managers to close after each test

const CLIENT_DEFAULTS = {
  forceNew: true,
  reconnectionDelay: 100,
  reconnectionDelayMax: 500,
  randomizationFactor: 0,
  timeout: 5000,
};

function track(x) {
  tracked.add(x);
  return x;
}

function closeAllClients() {
  for (const x of tracked) {
    try {
      if (x instanceof Manager) {
        x._close ? x._close() : x.close?.();
      } else {
        x.disconnect();
        x.io?._close?.();
      }
    } catch {}
  }
  tracked.clear();
}

function nspUrl(base, nsp) {
  return nsp === "/" ? base : base + nsp;
}

// Create a socket (not connected unless autoConnect) and track it.
function makeSocket(base, nsp = "/", opts = {}) {
  return track(io(nspUrl(base, nsp), { ...CLIENT_DEFAULTS, ...opts }));
}

// Resolve on the next `connect` of the socket; reject on connect_error.
function onceConnected(socket, ms = 5000, what = "connect") {
  return withTimeout(
    new Promise((resolve, reject) => {
      const ok = () => {
        socket.off("connect_error", ko);
        resolve(socket);
      };
      const ko = (err) => {
        socket.off("connect", ok);
        reject(Object.assign(new Error(`connect_error: ${err && err.message}`), { cause: err }));
      };
      socket.once("connect", ok);
      socket.once("connect_error", ko);
    }),
    ms,
    what,
  );
}

async function connect(base, nsp = "/", opts = {}, ms = 5000) {
  const socket = makeSocket(base, nsp, { ...opts, autoConnect: false });
  const p = onceConnected(socket, ms, `connect ${nsp}`);
  socket.connect();
  return p;
}

// Resolve with the connect_error (rejects if the socket connects).
async function connectError(base, nsp = "/", opts = {}, ms = 5000) {
  const socket = makeSocket(base, nsp, { reconnection: false, ...opts, autoConnect: false });
  const p = withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect_error", (err) => resolve(err));
      socket.once("connect", () => reject(new Error(`unexpectedly connected to ${nsp}`)));
    }),
    ms,
    `connect_error ${nsp}`,
  );
  socket.connect();
  return p;
}

// A brand-new client that presents {pid, offset} the way the official client
// does after a disconnection (it sets the private fields, so that
// `socket.recovered` is computed by the client as usual).
async function recoverAs(base, nsp, { pid, offset, auth, ...opts } = {}, ms = 6000) {
  const socket = makeSocket(base, nsp, { reconnection: false, ...opts, auth, autoConnect: false });
  socket._pid = pid;
  socket._lastOffset = offset;
  const p = onceConnected(socket, ms, `recovery connect ${nsp}`);
  socket.connect();
  return p;
}

// Emit with an acknowledgement. The callback form is used (not the promise
// form) so that `onAck` runs synchronously when the ACK packet is processed,
// which lets tests check ordering against events.
function ack(socket, event, ...args) {
  let ms = 5000;
  if (args.length && args[args.length - 1] && args[args.length - 1].__timeout) {
    ms = args.pop().__timeout;
  }
  return new Promise((resolve, reject) => {
    socket.timeout(ms).emit(event, ...args, (err, ...res) => {
      if (err) reject(new Error(`no ack for ${event} within ${ms} ms`));
      else resolve(res.length <= 1 ? res[0] : res);
    });
  });
}
ack.timeout = (ms) => ({ __timeout: ms });

// Like ack() but always resolves with the whole argument array.
function ackAll(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(5000).emit(event, ...args, (err, ...res) => {
      if (err) reject(new Error(`no ack for ${event}`));
      else resolve(res);
    });
  });
}

function whoami(socket) {
  return ack(socket, "whoami");
}

// Collect every occurrence of `event` on a socket.
function collect(socket, event, filter = () => true) {
  const items = [];
  const waiters = [];
  const listener = (...args) => {
    if (!filter(...args)) return;
    items.push({ args, t: Date.now() });
    for (const w of [...waiters]) w.check();
  };
  socket.on(event, listener);
  return {
    items,
    get args() {
      return items.map((x) => x.args);
    },
    waitFor(n, ms = 5000) {
      if (items.length >= n) return Promise.resolve(items);
      return withTimeout(
        new Promise((resolve) => {
          const w = {
            check: () => {
              if (items.length >= n) {
                waiters.splice(waiters.indexOf(w), 1);
                resolve(items);
              }
            },
          };
          waiters.push(w);
        }),
        ms,
        `${n} x "${event}" (got ${items.length})`,
      );
    },
    stop() {
      socket.off(event, listener);
    },
  };
}

// Collect `numbered` events with the given tag: entries {i, offset, arg, args}.
function collectNumbered(socket, tag) {
  const c = collect(socket, "numbered", (arg) => arg && arg.tag === tag);
  return {
    get list() {
      return c.items.map(({ args }) => ({
        arg: args[0],
        i: args[0].i,
        offset: args.length > 1 ? args[args.length - 1] : undefined,
        args,
      }));
    },
    waitFor: (n, ms) => c.waitFor(n, ms),
    stop: () => c.stop(),
  };
}

function onceEvent(emitter, event, ms = 5000) {
  return withTimeout(
    new Promise((resolve) => emitter.once(event, (...args) => resolve(args))),
    ms,
    `event ${event}`,
  );
}

// Hold the automatic reconnection of a Manager until release() is called.
// The Manager still goes through its own reconnect() path (backoff timer,
// reconnect_attempt, open, reconnect); only the open() it makes is delayed.
function holdReconnect(manager) {
  const orig = manager.open;
  let release;
  const gate = new Promise((r) => (release = r));
  manager.open = function (fn) {
    if (!this._reconnecting) return orig.call(this, fn);
    gate.then(() => orig.call(this, fn));
    return this;
  };
  return () => {
    manager.open = orig;
    release();
  };
}

// Wait until something is true (polling).
async function until(fn, ms = 5000, what = "condition", every = 25) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timeout after ${ms} ms waiting for ${what}`);
    await sleep(every);
  }
}

function toBuffer(x) {
  if (Buffer.isBuffer(x)) return x;
  if (x instanceof ArrayBuffer) return Buffer.from(x);
  if (ArrayBuffer.isView(x)) return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  return null;
}

// Deep-normalise binary values (ArrayBuffer, typed arrays) to Buffers.
function norm(v) {
  const b = toBuffer(v);
  if (b) return Buffer.from(b);
  if (Array.isArray(v)) return v.map(norm);
  if (v && typeof v === "object") {
    const o = {};
    for (const k of Object.keys(v)) o[k] = norm(v[k]);
    return o;
  }
  return v;
}

function assertOffset(x, msg = "offset") {
  assert.equal(typeof x, "string", `${msg}: expected a string offset, got ${JSON.stringify(x)}`);
  assert.ok(x.length > 0, `${msg}: offset must be non-empty`);
}

// ---------------------------------------------------------------------------
// TCP proxy

class TcpProxy {
  constructor(targetPort, targetHost = HOST) {
    this.targetPort = targetPort;
    this.targetHost = targetHost;
    this.conns = new Set();
    this.server = net.createServer((client) => this._onConn(client));
  }

  listen() {
    return new Promise((resolve) => {
      this.server.listen(0, HOST, () => {
        this.port = this.server.address().port;
        this.url = `http://${HOST}:${this.port}`;
        resolve(this);
      });
    });
  }

  _onConn(client) {
    const upstream = net.connect({ host: this.targetHost, port: this.targetPort });
    const c = { client, upstream, blackholed: !!this.blackholing, cut: false, bytesDropped: 0, held: this.holding ? [] : null };
    this.conns.add(c);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.on("data", (d) => {
      if (c.blackholed) c.bytesDropped += d.length;
      else upstream.write(d);
    });
    upstream.on("data", (d) => {
      if (c.blackholed) c.bytesDropped += d.length;
      else if (c.held) c.held.push(d);
      else client.write(d);
    });
    // a FIN from one side is passed on, unless blackholed (then nothing is)
    client.on("end", () => !c.blackholed && upstream.end());
    upstream.on("end", () => !c.blackholed && client.end());
    const gone = () => {
      if (c.blackholed) return; // keep the other side open, silently
      client.destroy();
      upstream.destroy();
      this.conns.delete(c);
    };
    client.on("close", gone);
    upstream.on("close", gone);
    client.on("error", () => {});
    upstream.on("error", () => {});
  }

  get active() {
    return [...this.conns].filter((c) => !c.cut);
  }

  // Stop forwarding in both directions but keep both TCP sockets open: no
  // FIN, no RST. Bytes that arrive are read and dropped, so neither side
  // sees back-pressure either.
  // Connections accepted afterwards are blackholed as well.
  blackholeAll() {
    this.blackholing = true;
    for (const c of this.conns) c.blackholed = true;
  }

  // Keep what the server sends (in order, nothing dropped) until releaseAll():
  // a long-polling client then gets no answer to its pending request and sends no
  // other, while what it sends still goes through. Connections accepted meanwhile
  // are held as well.
  holdAll() {
    this.holding = true;
    for (const c of this.conns) if (!c.held) c.held = [];
  }

  // Passes on what was held and forwards again.
  releaseAll() {
    this.holding = false;
    for (const c of this.conns) {
      const held = c.held || [];
      c.held = null;
      for (const d of held) if (!c.cut && !c.blackholed) c.client.write(d);
    }
  }

  // Abruptly close both sides (RST where possible).
  cutAll() {
    for (const c of this.conns) {
      c.cut = true;
      for (const s of [c.client, c.upstream]) {
        if (s.resetAndDestroy) s.resetAndDestroy();
        else s.destroy();
      }
    }
    this.conns.clear();
  }

  async close() {
    this.cutAll();
    await new Promise((r) => this.server.close(() => r()));
  }
}

// ---------------------------------------------------------------------------
// Test-file helpers

// Start one server for the test file. Returns an object whose `url` is set
// once the `before` hook ran.
// `onStart(ctx)` runs right after the server is up (root-level before hooks
// of node:test 20 do not wait for one another, so put extra setup there).
function useServer({ onStart } = {}) {
  const ctx = { url: null, port: null, server: null };
  before(async () => {
    ctx.server = await startServer();
    ctx.url = ctx.server.url;
    ctx.port = ctx.server.port;
    if (onStart) await onStart(ctx);
  }, { timeout: START_TIMEOUT_MS + 10000 });
  afterEach(() => closeAllClients());
  after(async () => {
    closeAllClients();
    if (ctx.server) await ctx.server.stop();
  });
  return ctx;
}

// node:test's test() with a default per-test timeout (TEST_TIMEOUT ms, default
// 30000). `--test-timeout` is not used because in Node 20 it also bounds each
// whole test file, which includes the server start (a first cargo build).
const TEST_TIMEOUT = Number(process.env.TEST_TIMEOUT || 30000);
function test(name, opts, fn) {
  if (typeof opts === "function") {
    fn = opts;
    opts = {};
  }
  return nodeTest.test(name, { timeout: TEST_TIMEOUT, ...opts }, fn);
}

const REFERENCE_SKIP = (why) =>
  IS_REFERENCE && !RUN_ALL ? `Tether-only (the reference does not: ${why})` : false;

// A test of behaviour that the Node.js reference server does not implement.
function tetherOnly(name, why, opts, fn) {
  if (typeof opts === "function") {
    fn = opts;
    opts = {};
  }
  return test(`[tether-only] ${name}`, { ...opts, skip: REFERENCE_SKIP(why) }, fn);
}

let uniq = 0;
function uid(prefix = "x") {
  uniq++;
  return `${prefix}-${process.pid}-${uniq}-${Math.random().toString(36).slice(2, 8)}`;
}

module.exports = {
  test,
  describe: nodeTest.describe,
  REPO,
  HOST,
  IS_REFERENCE,
  sleep,
  withTimeout,
  startServer,
  useServer,
  freePort,
  makeSocket,
  connect,
  connectError,
  recoverAs,
  onceConnected,
  ack,
  ackAll,
  whoami,
  collect,
  collectNumbered,
  onceEvent,
  holdReconnect,
  until,
  norm,
  toBuffer,
  assertOffset,
  TcpProxy,
  tetherOnly,
  track,
  closeAllClients,
  uid,
  io,
  Manager,
};
