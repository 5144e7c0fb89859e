// The admin UI's protocol, spoken by socket.io-client as the dashboard does, against one
// Tether node: login, config, all_sockets, the live socket and room events, server_stats
// (with recovery counts), and the actions.
"use strict";

const { test, after } = require("node:test");
const assert = require("node:assert/strict");
const { io } = require("socket.io-client");
const { start, stop, next, USER, PASSWORD, HASH } = require("../lib/server");

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const servers = [];
const clients = [];

async function server(env) {
  const s = await start(env);
  servers.push(s);
  return s;
}

function client(url, opts = {}) {
  const c = io(url, { forceNew: true, reconnection: false, ...opts });
  clients.push(c);
  return c;
}

after(async () => {
  for (const c of clients) c.disconnect();
  for (const s of servers) await stop(s);
});

test("development mode: config, all_sockets, live events, stats, actions", async () => {
  const srv = await server({});
  const user1 = client(srv.url, { transports: ["websocket"] });
  await next(user1, "connect");

  const admin = client(`${srv.url}/admin`);
  const aggTypes = new Set();
  admin.on("server_stats", (st) => st.aggregatedEvents.forEach((e) => aggTypes.add(e.type)));
  const gotAll = next(admin, "all_sockets");
  const [config] = await next(admin, "config");
  assert.deepEqual(config.supportedFeatures, [
    "EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT", "AGGREGATED_EVENTS", "ALL_EVENTS",
  ]);
  const [all] = await gotAll;
  const s1 = all.find((s) => s.id === user1.id);
  assert.ok(s1, `user1 in all_sockets: ${JSON.stringify(all)}`);
  assert.equal(s1.nsp, "/");
  assert.equal(s1.transport, "websocket");
  assert.deepEqual(s1.rooms, [user1.id]);
  assert.equal(s1.clientId.length, 12);
  assert.equal(s1.handshake.address, "127.0.0.1");
  assert.equal(s1.handshake.auth, undefined, "the CONNECT payload (recovery pid) is never shown");
  assert.ok(all.some((s) => s.nsp === "/admin"), "the admin socket itself is listed, as in the reference");

  // A socket connecting now is announced.
  const connected = next(admin, "socket_connected", (s) => s.nsp === "/");
  const user2 = client(srv.url, { transports: ["polling"] });
  await next(user2, "connect");
  const [s2, at] = await connected;
  assert.equal(s2.id, user2.id);
  assert.equal(s2.transport, "polling");
  assert.match(at, ISO);

  // Rooms, data and events.
  const joined = next(admin, "room_joined", (nsp, room) => room === "lobby");
  const received = next(admin, "event_received", (nsp, id, args) => args[0] === "join");
  await user2.emitWithAck("join", "lobby");
  const [jnsp, jroom, jid, jat] = await joined;
  assert.deepEqual([jnsp, jroom, jid], ["/", "lobby", user2.id]);
  assert.match(jat, ISO);
  const [, rid, rargs] = await received;
  assert.equal(rid, user2.id);
  assert.deepEqual(rargs, ["join", "lobby"]);

  const updated = next(admin, "socket_updated", (u) => u.id === user2.id);
  await user2.emitWithAck("set-data", { name: "bob" });
  const [u] = await updated;
  assert.deepEqual(u, { id: user2.id, nsp: "/", data: { name: "bob" } });

  const left = next(admin, "room_left", (nsp, room) => room === "lobby");
  await user2.emitWithAck("leave", "lobby");
  assert.equal((await left)[2], user2.id);

  // server_stats: this node, its namespaces, its connections.
  const [stats] = await next(admin, "server_stats", (st) => st.clientsCount >= 3);
  assert.equal(typeof stats.serverId, "string");
  assert.equal(typeof stats.hostname, "string");
  assert.equal(typeof stats.pid, "number");
  assert.ok(stats.uptime >= 0);
  assert.equal(stats.pollingClientsCount, 1);
  const root = stats.namespaces.find((n) => n.name === "/");
  assert.equal(root.socketsCount, 2);
  assert.ok(Array.isArray(stats.aggregatedEvents));
  // Over the stats so far, the aggregated events counted traffic both ways.
  for (let i = 0; i < 30 && !["rawConnection", "packetsIn", "bytesIn", "packetsOut", "bytesOut"].every((t) => aggTypes.has(t)); i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.deepEqual([...aggTypes].sort(), ["bytesIn", "bytesOut", "packetsIn", "packetsOut", "rawConnection"]);
  assert.deepEqual(Object.keys(stats.recovery).sort(), [
    "failedByReason", "packetsReplayed", "sessionsFailed", "sessionsKept", "sessionsRecovered",
  ]);

  // Actions: join (MJOIN with a socket id as the filter), emit, leave, disconnect.
  const joinedByAdmin = next(admin, "room_joined", (nsp, room) => room === "vip");
  admin.emit("join", "/", "vip", user1.id);
  assert.equal((await joinedByAdmin)[2], user1.id);
  const hello = next(user1, "hello");
  admin.emit("emit", "/", "vip", "hello", "from the admin", 42);
  // With recovery on, the last argument is the packet's offset.
  assert.deepEqual((await hello).slice(0, 2), ["from the admin", 42]);
  const leftByAdmin = next(admin, "room_left", (nsp, room) => room === "vip");
  admin.emit("leave", "/", "vip", user1.id);
  assert.equal((await leftByAdmin)[2], user1.id);

  const id1 = user1.id; // unset once it is disconnected
  const gone = next(admin, "socket_disconnected", (nsp, id) => id === id1);
  // As the reference's adapter, it leaves its rooms (its own included) on the way out.
  const leftOwn = next(admin, "room_left", (nsp, room, id) => id === id1 && room === id1);
  const kicked = next(user1, "disconnect");
  admin.emit("_disconnect", "/", false, user1.id);
  assert.equal((await kicked)[0], "io server disconnect");
  const [dnsp, , reason, dat] = await gone;
  assert.equal(dnsp, "/");
  assert.equal(reason, "server namespace disconnect");
  assert.match(dat, ISO);
  await leftOwn;
  assert.ok(user2.connected, "only the targeted socket is disconnected");
});

test("an upgrade to WebSocket is announced as socket_updated", async () => {
  const srv = await server({});
  const admin = client(`${srv.url}/admin`);
  await next(admin, "config");
  const connected = next(admin, "socket_connected", (s) => s.nsp === "/");
  const user = client(srv.url); // polling first, then the upgrade
  await next(user, "connect");
  const [s] = await connected;
  assert.equal(s.transport, "polling");
  const [u] = await next(admin, "socket_updated", (x) => x.id === s.id && x.transport);
  assert.deepEqual(u, { id: s.id, nsp: "/", transport: "websocket" });
});

test("basic auth: bad credentials refused, a session id reused", async () => {
  const srv = await server({ ADMIN_AUTH: `${USER}:${HASH}` });
  const bad = client(`${srv.url}/admin`, { auth: { username: USER, password: "wrong" } });
  const [err] = await next(bad, "connect_error");
  assert.equal(err.message, "invalid credentials");
  const none = client(`${srv.url}/admin`);
  assert.equal((await next(none, "connect_error"))[0].message, "invalid credentials");

  const good = client(`${srv.url}/admin`, { auth: { username: USER, password: PASSWORD } });
  const goodConfig = next(good, "config");
  const [sessionId] = await next(good, "session");
  assert.match(sessionId, /^[0-9a-f]{16}$/);
  await goodConfig;

  const again = client(`${srv.url}/admin`, { auth: { sessionId } });
  await next(again, "config");
  const forged = client(`${srv.url}/admin`, { auth: { sessionId: "0123456789abcdef" } });
  assert.equal((await next(forged, "connect_error"))[0].message, "invalid credentials");
});

test("production mode: stats only", async () => {
  const srv = await server({ ADMIN_MODE: "production" });
  const admin = client(`${srv.url}/admin`);
  let allSockets = false;
  admin.on("all_sockets", () => (allSockets = true));
  let connectedEvents = 0;
  admin.on("socket_connected", () => connectedEvents++);
  const [config] = await next(admin, "config");
  assert.ok(!config.supportedFeatures.includes("ALL_EVENTS"));
  const user = client(srv.url);
  await next(user, "connect");
  const [stats] = await next(admin, "server_stats", (st) => st.namespaces.some((n) => n.name === "/" && n.socketsCount === 1));
  assert.ok(stats.clientsCount >= 2);
  assert.equal(allSockets, false);
  assert.equal(connectedEvents, 0);
});

test("server_stats counts a recovery", async () => {
  const srv = await server({});
  const admin = client(`${srv.url}/admin`);
  await next(admin, "config");
  const user = client(srv.url, { transports: ["websocket"], reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 100 });
  await next(user, "connect");
  const id = user.id;
  user.io.engine.close(); // a network drop: the session is kept
  await next(user, "connect");
  assert.equal(user.recovered, true);
  assert.equal(user.id, id);
  const [stats] = await next(admin, "server_stats", (st) => st.recovery.sessionsRecovered >= 1);
  assert.equal(stats.recovery.sessionsKept, 1);
  assert.equal(stats.recovery.sessionsRecovered, 1);
  assert.equal(stats.recovery.sessionsFailed, 0);
});
