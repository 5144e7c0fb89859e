// Two Tether nodes sharing Redis, each instrumented: a dashboard connected to node A
// sees both nodes' server_stats, the sockets of node B (all_sockets and the live
// events), and its actions reach a socket on node B.
"use strict";

const { test, after } = require("node:test");
const assert = require("node:assert/strict");
const { io } = require("socket.io-client");
const { start, stop, next, clusterEnv, dropClusters } = require("../lib/server");

const servers = [];
const clients = [];

function client(url, opts = {}) {
  const c = io(url, { forceNew: true, reconnection: false, transports: ["websocket"], ...opts });
  clients.push(c);
  return c;
}

after(async () => {
  for (const c of clients) c.disconnect();
  for (const s of servers) await stop(s);
  dropClusters();
});

test("two nodes on Redis: both listed, B's sockets seen and disconnected from A", async () => {
  const env = clusterEnv("protocol");
  const a = await start({ ...env, NODE_NAME: "node-a" });
  servers.push(a);
  const b = await start({ ...env, NODE_NAME: "node-b" });
  servers.push(b);

  const early = client(b.url);
  await next(early, "connect");

  const admin = client(`${a.url}/admin`);
  const gotAll = next(admin, "all_sockets");
  await next(admin, "config");
  const [all] = await gotAll;
  const keys = all.map((s) => `${s.nsp}#${s.id}`);
  assert.equal(new Set(keys).size, keys.length, `no socket twice: ${keys}`);
  const remote = all.find((s) => s.id === early.id);
  assert.ok(remote, `node B's socket in all_sockets: ${JSON.stringify(all.map((s) => [s.nsp, s.id]))}`);
  assert.equal(remote.nsp, "/");
  assert.deepEqual(remote.rooms, [early.id]);

  // Both nodes report, each with its own id and its own sockets.
  const seen = new Map();
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`server_stats from ${[...seen.keys()]} only`)), 5000);
    admin.on("server_stats", (st) => {
      seen.set(st.serverId, st);
      if ([...seen.keys()].some((k) => k.startsWith("node-a:")) && [...seen.keys()].some((k) => k.startsWith("node-b:"))) {
        clearTimeout(t);
        resolve();
      }
    });
  });
  const statsB = [...seen.values()].find((st) => st.serverId.startsWith("node-b:"));
  const statsA = [...seen.values()].find((st) => st.serverId.startsWith("node-a:"));
  assert.equal(statsB.namespaces.find((n) => n.name === "/").socketsCount, 1);
  assert.equal(statsA.namespaces.find((n) => n.name === "/").socketsCount, 0);
  assert.equal(statsA.namespaces.find((n) => n.name === "/admin").socketsCount, 1);
  assert.ok(statsB.recovery, "each node reports its recovery counts");

  // Live events from node B reach the dashboard on node A.
  const connected = next(admin, "socket_connected", (s) => s.nsp === "/");
  const late = client(b.url);
  await next(late, "connect");
  assert.equal((await connected)[0].id, late.id);
  const joined = next(admin, "room_joined", (nsp, room, id) => room === "blue" && id === late.id);
  await late.emitWithAck("join", "blue");
  await joined;

  // An action from node A's dashboard reaches node B's socket: join, then disconnect.
  const joinedByAdmin = next(admin, "room_joined", (nsp, room, id) => room === "red" && id === early.id);
  admin.emit("join", "/", "red", early.id);
  await joinedByAdmin;
  const earlyId = early.id; // unset once it is disconnected
  const kicked = next(early, "disconnect");
  const gone = next(admin, "socket_disconnected", (nsp, id) => id === earlyId);
  admin.emit("_disconnect", "/", false, early.id);
  assert.equal((await kicked)[0], "io server disconnect");
  assert.equal((await gone)[2], "server namespace disconnect");
  assert.ok(late.connected, "only the targeted socket is disconnected");
  const [after] = await next(admin, "server_stats", (st) => st.serverId.startsWith("node-b:")
    && st.namespaces.find((n) => n.name === "/").socketsCount === 1);
  assert.ok(after);
});
