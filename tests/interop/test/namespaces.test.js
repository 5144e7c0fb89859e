// §2 namespaces and multiplexing, §3 auth middleware, §4.1 handshake.
"use strict";

const assert = require("node:assert/strict");
const h = require("../lib/harness");
const { test } = h;

const srv = h.useServer();

for (const transports of [["websocket"], ["polling"]]) {
  test(`/, /custom and /short multiplexed over one Engine.IO connection (${transports})`, async () => {
    const manager = h.track(new h.Manager(srv.url, { transports, reconnection: false, timeout: 5000 }));
    const sockets = ["/", "/custom", "/short"].map((nsp) => h.track(manager.socket(nsp)));
    const opened = [];
    manager.on("open", () => opened.push(manager.engine.id));
    await Promise.all(sockets.map((s) => h.onceConnected(s)));
    assert.equal(opened.length, 1, "a single Engine.IO connection was opened");
    for (const s of sockets) assert.equal(s.io, manager);

    const infos = await Promise.all(sockets.map((s) => h.whoami(s)));
    assert.deepEqual(infos.map((i) => i.nsp), ["/", "/custom", "/short"]);
    for (let k = 0; k < 3; k++) {
      assert.equal(infos[k].id, sockets[k].id);
      assert.equal(infos[k].middlewareRan, true);
      assert.equal(infos[k].recovered, false);
      assert.deepEqual(infos[k].rooms, []);
      assert.deepEqual(infos[k].data, {});
      assert.equal(infos[k].transport, transports[0]);
    }
    assert.equal(new Set(infos.map((i) => i.id)).size, 3, "each namespace has its own socket id");

    // rooms are per namespace
    const room = h.uid("room");
    assert.deepEqual(await h.ack(sockets[0], "join", room), [room]);
    assert.deepEqual(await h.ack(sockets[0], "room-members", room), [sockets[0].id]);
    assert.deepEqual(await h.ack(sockets[1], "room-members", room), []);
    assert.deepEqual(await h.ack(sockets[1], "room-members", sockets[0].id), [], "a socket id of / is not a room of /custom");

    // a namespace broadcast does not cross namespaces
    const tag = h.uid("nsp");
    const got = sockets.map((s) => h.collectNumbered(s, tag));
    assert.deepEqual(await h.ack(sockets[1], "emit-numbered", { count: 2, tag }), { emitted: 2 });
    await got[1].waitFor(2);
    await h.sleep(150);
    assert.equal(got[0].list.length, 0, "/ received a /custom broadcast");
    assert.equal(got[2].list.length, 0, "/short received a /custom broadcast");

    // kill-transport drops every namespace of the connection (it is one connection)
    const reasons = sockets.map((s) => h.onceEvent(s, "disconnect", 5000));
    sockets[2].emit("kill-transport");
    const rs = await Promise.all(reasons);
    for (const [reason] of rs) assert.match(reason, /^transport (close|error)$/);
  });
}

test("each namespace has its own pid, different from the sid (§4.1)", async () => {
  const manager = h.track(new h.Manager(srv.url, { transports: ["websocket"], reconnection: false }));
  const sockets = ["/", "/custom", "/short"].map((nsp) => h.track(manager.socket(nsp)));
  await Promise.all(sockets.map((s) => h.onceConnected(s)));
  for (const s of sockets) {
    assert.equal(typeof s._pid, "string", "CONNECT reply carries a pid");
    assert.ok(s._pid.length > 0);
    assert.notEqual(s._pid, s.id, "pid differs from sid");
    assert.equal(s.recovered, false);
  }
  assert.equal(new Set(sockets.map((s) => s._pid)).size, 3);
});

test("unknown namespace -> connect_error 'Invalid namespace', other namespaces on the connection unaffected", async () => {
  const err = await h.connectError(srv.url, "/nope");
  assert.equal(err.message, "Invalid namespace");

  const manager = h.track(new h.Manager(srv.url, { transports: ["websocket"], reconnection: false }));
  const good = h.track(manager.socket("/"));
  await h.onceConnected(good);
  const bad = h.track(manager.socket("/does-not-exist"));
  const e2 = await h.withTimeout(
    new Promise((resolve, reject) => {
      bad.once("connect_error", resolve);
      bad.once("connect", () => reject(new Error("connected to an unknown namespace")));
    }),
    5000,
    "connect_error",
  );
  assert.equal(e2.message, "Invalid namespace");
  assert.equal(good.connected, true);
  const me = await h.whoami(good);
  assert.equal(me.id, good.id);
});

for (const nsp of ["/", "/custom", "/short"]) {
  test(`middleware on ${nsp}: deny -> connect_error 'denied'; otherwise middlewareRan`, async () => {
    const err = await h.connectError(srv.url, nsp, { auth: { deny: true } });
    assert.equal(err.message, "denied");

    const s = await h.connect(srv.url, nsp, { auth: { deny: false, other: "x" } });
    const me = await h.whoami(s);
    assert.equal(me.middlewareRan, true);
    assert.equal(me.recovered, false);
    assert.deepEqual(me.data, {}, "the middleware mark is not part of socket.data");
    assert.equal(me.nsp, nsp);
  });
}

test("a denied namespace does not break the multiplexed connection", async () => {
  const manager = h.track(new h.Manager(srv.url, { transports: ["websocket"], reconnection: false }));
  const ok = h.track(manager.socket("/"));
  await h.onceConnected(ok);
  const denied = h.track(manager.socket("/custom", { auth: { deny: true } }));
  const err = await h.withTimeout(
    new Promise((resolve, reject) => {
      denied.once("connect_error", resolve);
      denied.once("connect", () => reject(new Error("connected despite deny")));
    }),
    5000,
    "connect_error",
  );
  assert.equal(err.message, "denied");
  assert.deepEqual(await h.ackAll(ok, "echo", 1, "two"), [1, "two"]);
  // the same manager can still open /custom with an accepted auth
  const ok2 = h.track(manager.socket("/short", { auth: { deny: false } }));
  await h.onceConnected(ok2);
  assert.equal((await h.whoami(ok2)).middlewareRan, true);
});

test("the server emits nothing on connection", async () => {
  const s = h.makeSocket(srv.url, "/", { transports: ["websocket"], autoConnect: false });
  const events = [];
  s.onAny((...args) => events.push(args));
  const p = h.onceConnected(s);
  s.connect();
  await p;
  await h.sleep(300);
  assert.deepEqual(events, []);
  assert.equal(s._lastOffset, undefined);
});

test("node-id: non-empty string, same in every namespace and stable", async () => {
  const manager = h.track(new h.Manager(srv.url, { transports: ["websocket"], reconnection: false }));
  const sockets = ["/", "/custom", "/short"].map((nsp) => h.track(manager.socket(nsp)));
  await Promise.all(sockets.map((s) => h.onceConnected(s)));
  const ids = await Promise.all(sockets.map((s) => h.ack(s, "node-id")));
  assert.equal(typeof ids[0], "string");
  assert.ok(ids[0].length > 0);
  assert.deepEqual(ids, [ids[0], ids[0], ids[0]]);
  const other = await h.connect(srv.url, "/", { transports: ["polling"] });
  assert.equal(await h.ack(other, "node-id"), ids[0]);
});
