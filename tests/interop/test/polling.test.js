// Exactly once over HTTP long-polling, with the official client: server-side
// closes (kill-transport, send buffer full), bursts larger than one poll, a
// client burst of acked events, and clients cut again and again by a proxy.
"use strict";

const assert = require("node:assert/strict");
const h = require("../lib/harness");
const { test, tetherOnly } = h;

const srv = h.useServer();
const POLLING = { transports: ["polling"] };

// The `i` of every `numbered` event with `tag`, in arrival order, and every
// disconnect the socket saw.
function watch(socket, tag) {
  const got = h.collectNumbered(socket, tag);
  const disconnects = [];
  const connects = [];
  socket.on("disconnect", (reason) => disconnects.push(reason));
  socket.on("connect", () => connects.push({ id: socket.id, recovered: socket.recovered, n: got.list.length }));
  return {
    connects,
    got,
    disconnects,
    get is() {
      return got.list.map((x) => x.i);
    },
  };
}

function assertOnceInOrder(is, count, what) {
  const dups = is.length - new Set(is).size;
  assert.equal(dups, 0, `${what}: ${dups} duplicates`);
  assert.deepEqual(is, Array.from({ length: count }, (_, k) => k + 1), `${what}: every event once, in order`);
}

test("kill-transport while events flow: recovered with no duplicate, 25 times (polling)", { timeout: 90000 }, async () => {
  const a = await h.connect(srv.url, "/", POLLING);
  const b = await h.connect(srv.url, "/", { transports: ["websocket"] });
  const id = a.id;
  const count = 60;
  for (let round = 1; round <= 25; round++) {
    const tag = h.uid(`kt${round}`);
    const w = watch(a, tag);
    // Events trickle in, one a millisecond, so that the close lands while some are
    // queued for the next poll.
    const flowing = h.ack(b, "emit-numbered", { to: id, count, tag, intervalMs: 1 }, h.ack.timeout(10000));
    await w.got.waitFor(5 + (round % 10), 5000);
    const back = h.onceConnected(a, 10000, `reconnect ${round}`);
    a.emit("kill-transport");
    await back;
    await flowing;
    assert.equal(a.recovered, true, `round ${round}: recovered`);
    assert.equal(a.id, id);
    await w.got.waitFor(count, 10000);
    await h.sleep(50);
    assertOnceInOrder(w.is, count, `round ${round}`);
    w.got.stop();
  }
});

for (const count of [10000, 50000]) {
  test(`a burst of ${count} events to a polling client: no disconnect, no duplicate`, { timeout: 60000 }, async () => {
    const a = await h.connect(srv.url, "/", POLLING);
    const tag = h.uid("burst");
    const w = watch(a, tag);
    assert.deepEqual(await h.ack(a, "emit-numbered", { to: a.id, count, tag }, h.ack.timeout(30000)), { emitted: count });
    await w.got.waitFor(count, 30000);
    await h.sleep(100);
    assertOnceInOrder(w.is, count, "burst");
    assert.deepEqual(w.disconnects, []);
  });
}

tetherOnly("send buffer full over polling: the client reconnects and gets the rest, exactly once", "its send buffer has no bound", { timeout: 90000 }, async () => {
  // Through a proxy that holds the server's answers while the events are emitted:
  // the client cannot poll the queue down meanwhile (a client that polls fast
  // enough never overflows, which made this test depend on timing).
  const proxy = await new h.TcpProxy(srv.port).listen();
  try {
    const a = await h.connect(proxy.url, "/", POLLING);
    const tag = h.uid("full");
    const w = watch(a, tag);
    // More packets than a session may buffer (65 536), plus what the one pending
    // poll takes (at most maxPayload, 1 MB: ~25 000 of these): the server closes the
    // session as "send buffer full" (recoverable); the client collects what was
    // queued, then the close, and recovers the rest from the log.
    const count = 120000;
    proxy.holdAll();
    a.emit("emit-numbered", { to: a.id, count, tag });
    await h.sleep(1500);
    proxy.releaseAll();
    await w.got.waitFor(count, 60000);
    await h.sleep(200);
    assertOnceInOrder(w.is, count, "send buffer full");
    assert.ok(w.disconnects.length >= 1, "the overflow closed the session");
    assert.equal(a.recovered, true);
  } finally {
    await proxy.close();
  }
});

test("a client burst of 20 000 acked events over polling: every ack, no disconnect", { timeout: 60000 }, async () => {
  const a = await h.connect(srv.url, "/", POLLING);
  const disconnects = [];
  a.on("disconnect", (r) => disconnects.push(r));
  const n = 20000;
  const acks = await Promise.all(
    Array.from({ length: n }, (_, i) => h.ack(a, "echo", i, h.ack.timeout(30000))),
  );
  assert.deepEqual(acks, Array.from({ length: n }, (_, i) => i));
  assert.deepEqual(disconnects, []);
});

test("churn: 10 polling clients cut by a proxy while events flow: 0 lost, 0 duplicates", { timeout: 90000 }, async () => {
  const proxy = await new h.TcpProxy(srv.port).listen();
  try {
    const room = h.uid("churn");
    const tag = h.uid("churn");
    const clients = [];
    for (let k = 0; k < 10; k++) {
      const s = await h.connect(proxy.url, "/", POLLING);
      await h.ack(s, "join", room);
      clients.push({ s, w: watch(s, tag) });
    }
    const emitter = await h.connect(srv.url, "/", { transports: ["websocket"] });
    const count = 400;
    const done = h.ack(emitter, "emit-numbered", { to: room, count, tag, intervalMs: 10 }, h.ack.timeout(30000));
    // A cut that falls between two requests of a client, or while it reconnects,
    // does not disconnect it: cut until every client was cut about once.
    const total = () => clients.reduce((n, { w }) => n + w.disconnects.length, 0);
    for (let cut = 0; cut < 8 && total() < clients.length; cut++) {
      await h.sleep(600);
      proxy.cutAll();
    }
    await done;
    await Promise.all(clients.map(({ w }) => w.got.waitFor(count, 30000)));
    await h.sleep(300);
    for (const [k, { s, w }] of clients.entries()) {
      assertOnceInOrder(w.is, count, `client ${k}`);
      // A client that is reconnecting when a cut comes is not disconnected again.
      const what = `client ${k}: ${JSON.stringify({ d: w.disconnects, c: w.connects })}`;
      assert.equal(w.connects.length, w.disconnects.length, what);
      assert.ok(w.connects.every((c) => c.recovered && c.id === s.id), `every reconnection recovered (${what})`);
    }
    assert.ok(total() >= clients.length / 2, `the proxy cut the clients (${total()} disconnects)`);
  } finally {
    await proxy.close();
  }
});
