// §1: 200 clients connecting at once, all dropped with kill-transport, all
// reconnecting at the same moment and recovering, with a missed broadcast.
"use strict";

const assert = require("node:assert/strict");
const h = require("../lib/harness");
const { test } = h;

const srv = h.useServer();

const N = 200;

test(`${N} clients connect at once, are killed, and all recover`, { timeout: 60000 }, async () => {
  const sockets = Array.from({ length: N }, () =>
    h.makeSocket(srv.url, "/", { transports: ["websocket"], autoConnect: false, timeout: 20000 }),
  );
  const t0 = Date.now();
  const connected = sockets.map((s) => h.onceConnected(s, 30000));
  sockets.forEach((s) => s.connect());
  await Promise.all(connected);
  const tConnect = Date.now() - t0;
  assert.equal(new Set(sockets.map((s) => s.id)).size, N, "distinct ids");

  const room = h.uid("load");
  const base = h.uid("load");
  await Promise.all(sockets.map((s) => h.ack(s, "join", room, h.ack.timeout(20000))));
  const got = sockets.map((s) => h.collect(s, "numbered", (arg) => arg && arg.tag === base));
  const emitter = await h.connect(srv.url, "/", { transports: ["websocket"] });
  assert.deepEqual(await h.ack(emitter, "emit-numbered", { to: room, count: 1, tag: base }), { emitted: 1 });
  await Promise.all(got.map((g) => g.waitFor(1, 20000)));
  for (const s of sockets) h.assertOffset(s._lastOffset);

  const ids = sockets.map((s) => s.id);
  // hold every reconnection, so that all of them reconnect at the same moment
  const releases = sockets.map((s) => h.holdReconnect(s.io));
  const discs = sockets.map((s) => h.onceEvent(s, "disconnect", 20000));
  sockets.forEach((s) => s.emit("kill-transport"));
  await Promise.all(discs);
  assert.deepEqual(await h.ack(emitter, "room-members", room), [], "nobody is connected in the room");

  // a broadcast that every one of them misses
  assert.deepEqual(await h.ack(emitter, "emit-numbered", { to: room, count: 2, tag: base }), { emitted: 2 });

  const t1 = Date.now();
  const back = sockets.map((s) => h.onceConnected(s, 30000));
  releases.forEach((r) => r());
  await Promise.all(back);
  const tRecover = Date.now() - t1;

  const notRecovered = sockets.filter((s) => !s.recovered).length;
  assert.equal(notRecovered, 0, `${notRecovered} of ${N} did not recover`);
  sockets.forEach((s, k) => assert.equal(s.id, ids[k]));
  await Promise.all(got.map((g) => g.waitFor(3, 20000)));
  await h.sleep(200);
  for (const g of got) assert.deepEqual(g.args.map(([arg]) => arg.i), [1, 1, 2]);
  const members = await h.ack(emitter, "room-members", room);
  assert.equal(members.length, N);
  assert.deepEqual(members, [...ids].sort());
  console.log(`# ${N} clients: connect ${tConnect} ms, recover ${tRecover} ms`);
});

test("250 concurrent Engine.IO connections (polling and websocket mixed)", { timeout: 60000 }, async () => {
  const sockets = Array.from({ length: 250 }, (_, k) =>
    h.makeSocket(srv.url, "/", {
      transports: k % 5 === 0 ? ["polling"] : ["websocket"],
      autoConnect: false,
      reconnection: false,
      timeout: 20000,
    }),
  );
  const connected = sockets.map((s) => h.onceConnected(s, 30000));
  sockets.forEach((s) => s.connect());
  await Promise.all(connected);
  const answers = await Promise.all(sockets.map((s) => h.ackAll(s, "echo", s.id)));
  answers.forEach((a, k) => assert.deepEqual(a, [sockets[k].id]));
});
