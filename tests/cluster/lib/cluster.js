// Harness of the multi-node suite (CONTRACT.md §6).
//
// - Redis: the real backend at REDIS_HOST:REDIS_PORT (127.0.0.1:6379). The
//   suite never touches other data: it uses one logical database
//   (CLUSTER_REDIS_DB, default 7) and FLUSHDBs that database only, at the
//   start of each test file. Test files run one at a time.
// - A TcpProxy (lib/proxy.js) in front of Redis for every node, in this
//   process; node X gets ADAPTER=redis://127.0.0.1:<its proxy's port>/<db>.
//   `cluster.proxy` drives them all at once (a backend outage),
//   `cluster.proxies[X]` one node's link to the backend.
// - CLUSTER_BACKEND=postgres: PostgreSQL instead (tether-postgres) at PG_HOST:PG_PORT
//   (127.0.0.1:5432, user postgres, database test, through psql): every Cluster gets
//   a schema of its own, dropped by stopAll(), and node X gets
//   ADAPTER=postgres://postgres@127.0.0.1:<its proxy's port>/test with that schema as
//   its search_path. Only the backend-neutral test files apply (not 07, 08).
// - CLUSTER_BACKEND=nats: NATS JetStream instead (tether-nats) at NATS_HOST:NATS_PORT
//   (127.0.0.1:4222): every Cluster gets a name of its own (its stream, KV bucket
//   and subjects, deleted by stopAll()), and node X gets
//   ADAPTER=nats://127.0.0.1:<its proxy's port>?cluster=<name>. The files that look
//   into the backend or are about Redis do not apply (06, 07, 08).
// - ServerNode: one node, started as `/bin/sh -c "exec <cmd>"` in its own
//   process group (default cmd: target/release/conformance-server, built by
//   run.sh; override with SERVER_CMD), with PORT, ADAPTER and NODE_NAME.
//   Ready when it answers `node-id`. stop() = SIGTERM, kill() = SIGKILL,
//   start() again = restart on the same port.
// - Client: a socket.io-client socket on its own Manager (auto-reconnect off,
//   so a test decides where a client reconnects) that records every event.
"use strict";

const { spawn, execFileSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const net = require("node:net");
const path = require("node:path");
const assert = require("node:assert/strict");
const { Manager } = require("socket.io-client");
const { createClient } = require("redis");
const { TcpProxy, ProxyGroup } = require("./proxy");

const REPO = path.resolve(__dirname, "..", "..", "..");
const HOST = "127.0.0.1";
const REDIS_HOST = process.env.REDIS_HOST || "127.0.0.1";
const REDIS_PORT = Number(process.env.REDIS_PORT || 6379);
// CLUSTER_ENGINE=redis-tls (run.sh): the nodes reach the same Redis on its TLS port, with
// the CA and a client certificate of REDIS_TLS_DIR; the suite itself uses the plain port.
const REDIS_TLS_PORT = process.env.CLUSTER_ENGINE === "redis-tls" ? Number(process.env.REDIS_TLS_PORT) : 0;
const redisTlsParams = () => {
  const d = process.env.REDIS_TLS_DIR;
  return new URLSearchParams({ tls_ca: `${d}/ca.pem`, tls_cert: `${d}/client.pem`, tls_key: `${d}/client.key` }).toString();
};
const REDIS_DB = Number(process.env.CLUSTER_REDIS_DB || 7);
// CLUSTER_ENGINE is the old name, still accepted.
const BACKEND = process.env.CLUSTER_BACKEND || process.env.CLUSTER_ENGINE || "redis";
const PG_HOST = process.env.PG_HOST || "127.0.0.1";
const PG_PORT = Number(process.env.PG_PORT || 5432);
const NATS_HOST = process.env.NATS_HOST || "127.0.0.1";
const NATS_PORT = Number(process.env.NATS_PORT || 4222);

// Deletes JetStream streams with the plain NATS protocol (no client library needed).
function natsDeleteStreams(names) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: NATS_HOST, port: NATS_PORT });
    let buf = "";
    const done = () => {
      sock.destroy();
      resolve();
    };
    sock.setTimeout(5000, done);
    sock.on("error", done);
    sock.on("data", (d) => {
      buf += d.toString();
      if (buf.includes("PONG")) done();
    });
    sock.on("connect", () => {
      let cmd = 'CONNECT {"verbose":false}\r\n';
      for (const n of names) cmd += `PUB $JS.API.STREAM.DELETE.${n} 0\r\n\r\n`;
      sock.write(cmd + "PING\r\n");
    });
  });
}
const TARGET_DIR = process.env.CARGO_TARGET_DIR || path.join(REPO, "target");
const DEFAULT_BIN = path.join(TARGET_DIR, "release", "conformance-server");
const START_TIMEOUT_MS = Number(process.env.SERVER_START_TIMEOUT_MS || 30000);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

// Polls `pred` (sync or async) until truthy; throws with `what` after `ms`.
async function waitFor(pred, ms, what, every = 20) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timeout after ${ms} ms: ${typeof what === "function" ? what() : what}`);
    await sleep(every);
  }
}

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
      s.on("error", () => {});
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
}

// ---------------------------------------------------------------------------
// Offsets: Redis stream ids "<ms>-<seq>".

function parseOffset(o) {
  const m = /^(\d+)-(\d+)$/.exec(o);
  assert.ok(m, `offset ${JSON.stringify(o)} is not a stream id`);
  return [BigInt(m[1]), BigInt(m[2])];
}

function cmpOffset(a, b) {
  const [am, as] = parseOffset(a);
  const [bm, bs] = parseOffset(b);
  if (am !== bm) return am < bm ? -1 : 1;
  if (as !== bs) return as < bs ? -1 : 1;
  return 0;
}

// ---------------------------------------------------------------------------
// Process groups, killed on exit whatever happens.

const liveGroups = new Set();
process.on("exit", () => {
  for (const pid of liveGroups) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {}
  }
});

function killGroup(pid, sig) {
  try {
    process.kill(-pid, sig);
  } catch {}
}

class ServerNode {
  // cmd: the command after `exec` (default: the release conformance-server).
  constructor({ name, port, adapter, cmd, env = {} }) {
    this.name = name;
    this.port = port;
    this.adapter = adapter;
    this.cmd = cmd || process.env.SERVER_CMD || JSON.stringify(DEFAULT_BIN);
    this.env = env;
    this.child = null;
    this.out = "";
    this.nodeId = null;
    this.starts = 0;
  }

  get url() {
    return `http://${HOST}:${this.port}`;
  }

  isAlive() {
    return !!this.child && !this.exited;
  }

  async start() {
    if (!this.port) this.port = await freePort();
    this.starts++;
    this.exited = null;
    const child = spawn("/bin/sh", ["-c", `exec ${this.cmd}`], {
      cwd: REPO,
      env: {
        ...process.env,
        ...this.env,
        PORT: String(this.port),
        ADAPTER: this.adapter,
        NODE_NAME: this.name,
      },
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    liveGroups.add(child.pid);
    const keep = (chunk) => {
      const s = chunk.toString();
      this.out += s.replace(/^/gm, `[${this.name}#${this.starts}] `);
      if (this.out.length > 256 * 1024) this.out = this.out.slice(-128 * 1024);
      if (process.env.CLUSTER_LOG === "1") process.stderr.write(`[${this.name}] ${s}`);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    this.exitP = new Promise((resolve) =>
      child.once("exit", (code, signal) => {
        this.exited = { code, signal, at: Date.now() };
        liveGroups.delete(child.pid);
        resolve(this.exited);
      }),
    );
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (this.exited) {
        throw new Error(`node ${this.name} exited before it was ready (${JSON.stringify(this.exited)})\n${this.out}`);
      }
      if (await canConnect(this.port)) {
        try {
          this.nodeId = await this.#askNodeId();
          return this;
        } catch {}
      }
      if (Date.now() > deadline) {
        killGroup(child.pid, "SIGKILL");
        throw new Error(`node ${this.name} not ready on port ${this.port} within ${START_TIMEOUT_MS} ms\n${this.out}`);
      }
      await sleep(100);
    }
  }

  async #askNodeId() {
    const m = new Manager(this.url, { reconnection: false, transports: ["websocket"], timeout: 2000 });
    const s = m.socket("/");
    try {
      await withTimeout(
        new Promise((resolve, reject) => {
          s.once("connect", resolve);
          s.once("connect_error", reject);
          s.connect();
        }),
        3000,
        "node-id probe connect",
      );
      return await s.timeout(2000).emitWithAck("node-id");
    } finally {
      s.disconnect();
      m.engine?.close();
    }
  }

  // SIGTERM; resolves with how long the node took to exit (SIGKILL after graceMs).
  async stop(graceMs = 15000) {
    if (!this.isAlive()) return { ms: 0, graceful: true, exit: this.exited };
    const t0 = Date.now();
    killGroup(this.child.pid, "SIGTERM");
    const exit = await Promise.race([this.exitP, sleep(graceMs).then(() => null)]);
    if (!exit) {
      killGroup(this.child.pid, "SIGKILL");
      await this.exitP;
      return { ms: Date.now() - t0, graceful: false, exit: this.exited };
    }
    return { ms: exit.at - t0, graceful: true, exit };
  }

  // SIGKILL (a crash).
  async kill() {
    if (!this.isAlive()) return this.exited;
    killGroup(this.child.pid, "SIGKILL");
    return this.exitP;
  }

  log() {
    return this.out;
  }
}

// ---------------------------------------------------------------------------
// Redis: one logical database of the shared server, flushed per test file.
//
// Two runs on one database would flush each other's data, so a test file
// holds a lock file per database (stale locks of dead processes are taken
// over) from Cluster.start() to stopAll().

const dbLockPath = (db) => path.join(os.tmpdir(), `tether-cluster-redis-${REDIS_PORT}-db${db}.lock`);
let heldLock = null;
process.on("exit", () => {
  if (heldLock) {
    try {
      fs.unlinkSync(heldLock);
    } catch {}
  }
});

async function lockDb(db, ms = 15 * 60 * 1000) {
  const file = dbLockPath(db);
  const deadline = Date.now() + ms;
  let told = false;
  for (;;) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: "wx" });
      heldLock = file;
      return;
    } catch (e) {
      if (e.code !== "EEXIST") throw e;
    }
    let owner = NaN;
    try {
      owner = Number(fs.readFileSync(file, "utf8"));
    } catch {}
    let alive = false;
    if (owner > 0) {
      try {
        process.kill(owner, 0);
        alive = true;
      } catch {}
    }
    if (!alive && owner > 0) {
      try {
        fs.unlinkSync(file);
      } catch {}
      continue;
    }
    if (Date.now() > deadline) throw new Error(`Redis database ${db} is locked by pid ${owner} (${file})`);
    if (!told) {
      told = true;
      console.log(`# waiting for Redis database ${db}, in use by pid ${owner} (set CLUSTER_REDIS_DB to use another)`);
    }
    await sleep(250);
  }
}

function unlockDb() {
  if (!heldLock) return;
  try {
    fs.unlinkSync(heldLock);
  } catch {}
  heldLock = null;
}

// Runs SQL on the PostgreSQL of CLUSTER_BACKEND=postgres; the rows of its last
// statement, each as an array of column texts.
function psql(sql) {
  const out = execFileSync(
    "psql",
    ["-h", PG_HOST, "-p", String(PG_PORT), "-U", "postgres", "-d", "test", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", `SET client_min_messages = warning; ${sql}`],
    { stdio: ["ignore", "pipe", "inherit"], encoding: "utf8" },
  );
  return out
    .split("\n")
    .filter((l) => l.length > 0)
    .map((l) => l.split("\t"));
}

const sqlText = (s) => `'${String(s).replace(/'/g, "''")}'`;

async function redisAdmin(db = REDIS_DB, host = REDIS_HOST, port = REDIS_PORT) {
  const r = createClient({ url: `redis://${host}:${port}/${db}` });
  r.on("error", () => {});
  await r.connect();
  return r;
}

// ---------------------------------------------------------------------------
// Clients

const openClients = new Set();

class Client {
  constructor(url, { nsp = "/", auth, transports = ["websocket"], name } = {}) {
    this.url = url;
    this.nsp = nsp;
    this.name = name || `${url}${nsp}`;
    this.manager = new Manager(url, {
      reconnection: false,
      transports,
      timeout: 20000,
      autoConnect: false,
    });
    this.socket = this.manager.socket(nsp, auth === undefined ? {} : { auth });
    this.events = []; // every event: {event, args}
    this.numbered = []; // {tag, i, offset, bin, at}
    this.disconnects = []; // reasons
    this.lastOffset = undefined;
    this.socket.onAny((event, ...args) => {
      this.events.push({ event, args });
      const last = args[args.length - 1];
      if (typeof last === "string") this.lastOffset = last;
      if (event === "numbered") {
        const a = args[0] || {};
        this.numbered.push({
          tag: a.tag,
          i: a.i,
          offset: typeof last === "string" && args.length > 1 ? last : undefined,
          bin: a.bin ? [...new Uint8Array(a.bin)] : undefined,
          at: Date.now(),
        });
      }
    });
    this.socket.on("disconnect", (reason) => this.disconnects.push(reason));
    openClients.add(this);
  }

  connect(timeout = 15000) {
    return withTimeout(
      new Promise((resolve, reject) => {
        this.socket.once("connect", () => {
          this.id = this.socket.id;
          this.pid = this.socket._pid;
          resolve(this);
        });
        this.socket.once("connect_error", (e) => reject(e));
        this.socket.connect();
      }),
      timeout,
      `connect ${this.name}`,
    );
  }

  get connected() {
    return this.socket.connected;
  }

  ack(event, ...args) {
    return this.ackT(10000, event, ...args);
  }

  ackT(ms, event, ...args) {
    return this.socket.timeout(ms).emitWithAck(event, ...args);
  }

  // Resolves with every argument of the ack (emitWithAck gives the first only).
  ackAll(ms, event, ...args) {
    return new Promise((resolve, reject) => {
      this.socket.timeout(ms).emit(event, ...args, (err, ...res) => (err ? reject(err) : resolve(res)));
    });
  }

  emit(event, ...args) {
    this.socket.emit(event, ...args);
  }

  tagged(tag) {
    return this.numbered.filter((n) => n.tag === tag);
  }

  is(tag) {
    return this.tagged(tag).map((n) => n.i);
  }

  waitNumbered(tag, count, ms = 10000) {
    return waitFor(
      () => this.tagged(tag).length >= count,
      ms,
      () => `${this.name}: ${count} "${tag}" events (got ${JSON.stringify(this.is(tag))})`,
    );
  }

  waitDisconnect(ms = 10000) {
    if (!this.socket.connected && this.disconnects.length) return Promise.resolve(this.disconnects.at(-1));
    return withTimeout(
      new Promise((resolve) => this.socket.once("disconnect", resolve)),
      ms,
      `${this.name} disconnect`,
    );
  }

  // The recovery credentials the official client would send.
  creds() {
    return { pid: this.pid, offset: this.lastOffset };
  }

  close() {
    openClients.delete(this);
    try {
      this.socket.disconnect();
    } catch {}
    try {
      this.manager.engine?.close();
    } catch {}
  }
}

async function connect(url, opts = {}) {
  const c = new Client(url, opts);
  await c.connect(opts.timeout);
  return c;
}

// A new client that presents `creds` ({pid, offset}) in its CONNECT. The
// official client's `recovered` flag is only set on the same Socket object,
// so the outcome is read with `whoami`.
async function recoverAs(url, creds, opts = {}) {
  return connect(url, { ...opts, auth: { ...creds, ...(opts.auth || {}) } });
}

function closeAllClients() {
  for (const c of [...openClients]) c.close();
}

// ---------------------------------------------------------------------------
// A cluster of conformance-server nodes, each behind its own proxy.

class Cluster {
  constructor() {
    this.nodes = {};
    this.observers = new Map(); // node name -> client on "/" used for queries
  }

  // `redis: {host, port}`: a Redis of the test's own (lib/redis-server.js) instead of
  // the shared one. The nodes connect to it directly, with no proxy, so that they see
  // its restarts as they are; nobody else uses it, so there is no database lock.
  static async start(names = ["A", "B", "C"], { db = REDIS_DB, redis } = {}) {
    const c = new Cluster();
    c.db = db;
    c.direct = redis || null;
    if (BACKEND === "postgres" && !c.direct) {
      c.schema = `tether_cluster_${process.pid}_${Date.now()}`;
      psql(`CREATE SCHEMA ${c.schema}`);
      c.proxies = {};
      c.proxy = new ProxyGroup([]);
      await Promise.all(names.map((n) => c.add(n)));
      return c;
    }
    if (BACKEND === "nats" && !c.direct) {
      c.natsName = `t${process.pid}_${Date.now()}`;
      c.proxies = {};
      c.proxy = new ProxyGroup([]);
      await Promise.all(names.map((n) => c.add(n)));
      return c;
    }
    if (!c.direct) await lockDb(db);
    c.redis = c.direct ? await redisAdmin(db, redis.host, redis.port) : await redisAdmin(db);
    await c.redis.flushDb();
    c.proxies = {};
    c.proxy = new ProxyGroup([]);
    await Promise.all(names.map((n) => c.add(n)));
    return c;
  }

  async add(name, opts = {}) {
    if (this.direct) {
      const node = new ServerNode({ name, adapter: `redis://${this.direct.host}:${this.direct.port}/${this.db}`, ...opts });
      this.nodes[name] = node;
      await node.start();
      return node;
    }
    const pg = !!this.schema;
    const nats = !!this.natsName;
    // Over redis-tls, a node with its own command (07's Node.js node, whose adapter takes
    // redis:// only) uses the plain port of the same Redis.
    const tls = REDIS_TLS_PORT && !opts.cmd;
    const proxy = pg
      ? new TcpProxy({ targetHost: PG_HOST, targetPort: PG_PORT })
      : nats
        ? new TcpProxy({ targetHost: NATS_HOST, targetPort: NATS_PORT })
        : new TcpProxy({ targetHost: REDIS_HOST, targetPort: tls ? REDIS_TLS_PORT : REDIS_PORT });
    await proxy.listen();
    this.proxies[name] = proxy;
    this.proxy.proxies.push(proxy);
    const adapter = pg
      ? `postgres://postgres@127.0.0.1:${proxy.port}/test?options=-csearch_path%3D${this.schema}`
      : nats
        ? `nats://127.0.0.1:${proxy.port}?cluster=${this.natsName}`
        : tls
          ? `rediss://127.0.0.1:${proxy.port}/${this.db}?${redisTlsParams()}`
          : `redis://127.0.0.1:${proxy.port}/${this.db}`;
    const node = new ServerNode({ name, adapter, ...opts });
    this.nodes[name] = node;
    await node.start();
    return node;
  }

  node(name) {
    return this.nodes[name];
  }

  // What the backend holds, whichever it is (the tests' view into it).

  // The ids of the log entries whose data contains `text`.
  async logIdsContaining(text) {
    if (this.schema) {
      const rows = psql(`SELECT id FROM ${this.schema}.tether_log WHERE strpos(data, ${sqlText(text)}) > 0 ORDER BY id`);
      return rows.map((r) => `${r[0]}-0`);
    }
    const entries = await this.redis.xRange("socket.io", "-", "+");
    return entries.filter((en) => (en.message.data || "").includes(text)).map((en) => en.id);
  }

  // Whether a session of `pid` is kept (after a recoverable disconnect).
  async hasKeptSession(pid) {
    if (this.schema) {
      const rows = psql(`SELECT 1 FROM ${this.schema}.tether_sessions WHERE pid = ${sqlText(pid)} AND expires_at > clock_timestamp()`);
      return rows.length > 0;
    }
    return (await this.redis.exists(`sio:session:${pid}`)) === 1;
  }

  // The node that owns the live record of `pid` (null: none).
  async liveRecordNode(pid) {
    if (this.schema) {
      const rows = psql(`SELECT node FROM ${this.schema}.tether_live WHERE pid = ${sqlText(pid)} AND expires_at > clock_timestamp()`);
      return rows.length ? rows[0][0] : null;
    }
    return await this.redis.hGet(`tether:live:${pid}`, "node");
  }

  url(name) {
    return this.nodes[name].url;
  }

  // A long-lived client of node `name` for room-members/node-id queries.
  async observer(name, nsp = "/") {
    const key = `${name}${nsp}`;
    let o = this.observers.get(key);
    if (o && o.connected && o.url === this.url(name)) return o;
    o?.close();
    o = await connect(this.url(name), { name: `observer-${key}`, nsp });
    openClients.delete(o); // not closed by the per-test cleanup
    this.observers.set(key, o);
    return o;
  }

  // Waits until node `name` no longer lists socket `sid` (§6.2: from then on
  // its session is restorable everywhere).
  async waitGone(name, sid, ms = 10000, nsp = "/") {
    const o = await this.observer(name, nsp);
    await waitFor(async () => (await o.ack("room-members", sid)).length === 0, ms, `${sid} gone from ${name}`, 25);
  }

  async stopAll() {
    for (const o of this.observers.values()) o.close();
    this.observers.clear();
    await Promise.all(Object.values(this.nodes).map((n) => n.kill()));
    await Promise.all(Object.values(this.proxies || {}).map((p) => p.close()));
    // (a test's own Redis may be down: close at once rather than wait to send QUIT)
    if (this.redis) await (this.direct ? this.redis.disconnect() : this.redis.quit()).catch(() => {});
    if (this.schema) {
      psql(`DROP SCHEMA IF EXISTS ${this.schema} CASCADE`);
      return;
    }
    if (this.natsName) {
      await natsDeleteStreams([`TETHER_${this.natsName}`, `KV_tether_${this.natsName}`]);
      return;
    }
    if (!this.direct) unlockDb();
  }

  logs() {
    return Object.values(this.nodes)
      .map((n) => n.log())
      .join("");
  }
}

// ---------------------------------------------------------------------------
// Assertions

// The events of `tag` that `client` got: each i once, in the order of `is`.
function assertExactly(client, tag, is, what = "") {
  assert.deepEqual(client.is(tag), is, `${client.name} ${what}: "${tag}" events`);
}

// Every receiver got the same offset for the same (tag, i), and offsets grow.
function assertSameOffsets(clients, tag) {
  let ref = null;
  for (const c of clients) {
    const list = c.tagged(tag);
    for (let k = 1; k < list.length; k++) {
      assert.equal(cmpOffset(list[k - 1].offset, list[k].offset), -1, `${c.name}: "${tag}" offsets grow`);
    }
    const m = new Map(list.map((n) => [n.i, n.offset]));
    if (ref === null) ref = m;
    else {
      for (const [i, o] of m) {
        if (ref.has(i)) assert.equal(o, ref.get(i), `${c.name}: offset of "${tag}" #${i}`);
      }
    }
  }
}

// `seq` is a list of 1..n with no duplicate and in increasing order.
function assertIncreasingNoDup(seq, what) {
  for (let k = 1; k < seq.length; k++) {
    assert.ok(seq[k] > seq[k - 1], `${what}: not increasing at ${k}: ${JSON.stringify(seq)}`);
  }
}

let tagCounter = 0;
function uniqueTag(prefix = "t") {
  return `${prefix}-${process.pid}-${++tagCounter}`;
}

module.exports = {
  REPO,
  REDIS_DB,
  sleep,
  withTimeout,
  waitFor,
  freePort,
  parseOffset,
  cmpOffset,
  ServerNode,
  Cluster,
  Client,
  connect,
  recoverAs,
  closeAllClients,
  redisAdmin,
  assertExactly,
  assertSameOffsets,
  assertIncreasingNoDup,
  uniqueTag,
};
