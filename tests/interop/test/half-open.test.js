// §4.4 half-open connections: a pid whose connection went silent (no FIN, no
// RST) is taken over after a bounded heartbeat probe (~2 s); the pid of a live
// socket is not.
"use strict";

const assert = require("node:assert/strict");
const h = require("../lib/harness");
const { test } = h;

const srv = h.useServer();

async function setup(proxy, transports) {
  const a = await h.connect(proxy.url, "/", { transports, reconnection: false });
  const w = await h.connect(srv.url, "/", { transports: ["websocket"] }); // witness, direct
  const b = await h.connect(srv.url, "/", { transports: ["websocket"] }); // emitter, direct
  const room = h.uid("ho");
  await h.ack(a, "join", room);
  await h.ack(a, "set-data", { via: "proxy" });
  await h.ack(w, "join", room);
  const tag = h.uid("ho");
  const ga = h.collectNumbered(a, tag);
  const gw = h.collectNumbered(w, tag);
  await h.ack(b, "emit-numbered", { to: room, count: 1, tag });
  await ga.waitFor(1);
  await gw.waitFor(1);
  return { a, w, b, room, tag, ga, gw };
}

for (const transports of [["websocket"], ["polling"]]) {
  h.tetherOnly(
    `half-open (${transports}): blackholed socket is taken over within ~3 s, every missed event exactly once`,
    "the reference refuses the pid of a socket it still holds (§4.4)",
    { timeout: 20000 },
    async () => {
      const proxy = await new h.TcpProxy(srv.port).listen();
      try {
        const { a, w, b, room, tag, gw } = await setup(proxy, transports);
        const id = a.id;
        const pid = a._pid;
        const offset = a._lastOffset;
        h.assertOffset(offset);
        const aDisc = [];
        a.on("disconnect", (r) => aDisc.push(r));

        proxy.blackholeAll();
        await h.sleep(50);
        // the server still holds a: it is listed, and events go into the void
        assert.deepEqual(await h.ack(b, "room-members", id), [id], "server still holds the silent socket");
        assert.deepEqual(await h.ack(b, "emit-numbered", { to: room, count: 5, tag }), { emitted: 5 });
        // events 6..7 to its id: i continues the sequence with another emit
        const tagId = tag + "-id";
        await h.ack(b, "emit-numbered", { to: id, count: 2, tag: tagId });
        await gw.waitFor(6);

        // the client comes back on a fresh (direct) connection with pid + offset
        const r = h.makeSocket(srv.url, "/", { transports: ["websocket"], reconnection: false, autoConnect: false, timeout: 8000 });
        const gr = h.collectNumbered(r, tag);
        const grId = h.collectNumbered(r, tagId);
        r._pid = pid;
        r._lastOffset = offset;
        const t0 = Date.now();
        const p = h.onceConnected(r, 8000, "takeover");
        r.connect();
        await p;
        const took = Date.now() - t0;
        assert.equal(r.recovered, true, "half-open socket must be taken over");
        assert.equal(r.id, id, "same sid");
        assert.equal(r._pid, pid, "same pid");
        assert.ok(took < 3500, `takeover took ${took} ms (probe is bounded at ~2 s)`);

        const me = await h.whoami(r);
        assert.equal(me.recovered, true);
        assert.equal(me.middlewareRan, false);
        assert.deepEqual(me.rooms, [room]);
        assert.deepEqual(me.data, { via: "proxy" });

        await gr.waitFor(5, 3000);
        await grId.waitFor(2, 3000);
        await h.sleep(200);
        assert.deepEqual(gr.list.map((e) => e.i), [1, 2, 3, 4, 5], "missed room events, once, in order");
        assert.deepEqual(grId.list.map((e) => e.i), [1, 2]);
        // original offsets (witness got the room events live)
        assert.deepEqual(gr.list.map((e) => e.offset), gw.list.slice(1).map((e) => e.offset));

        // the old socket is gone; only the newcomer holds the id
        assert.deepEqual(await h.ack(b, "room-members", id), [id]);
        assert.deepEqual(await h.ack(b, "room-members", room), [id, w.id].sort());
        // later events reach the newcomer only once
        const tagPost = tag + "-post";
        const gp = h.collectNumbered(r, tagPost);
        await h.ack(b, "emit-numbered", { to: room, count: 2, tag: tagPost });
        await gp.waitFor(2);
        await h.sleep(100);
        assert.deepEqual(gp.list.map((e) => e.i), [1, 2]);
        assert.deepEqual(aDisc, [], "the blackholed client heard nothing (its connection is silent)");
      } finally {
        await proxy.close();
      }
    },
  );
}

test("the pid of a live socket behind the proxy (not blackholed) -> new session, live socket undisturbed", { timeout: 20000 }, async () => {
  const proxy = await new h.TcpProxy(srv.port).listen();
  try {
    const { a, b, room, tag, ga } = await setup(proxy, ["websocket"]);
    const id = a.id;
    const disconnects = [];
    a.on("disconnect", (r) => disconnects.push(r));
    const t0 = Date.now();
    const r = await h.recoverAs(srv.url, "/", { pid: a._pid, offset: a._lastOffset, transports: ["websocket"] }, 8000);
    const took = Date.now() - t0;
    assert.ok(!r.recovered, "the pid of a live socket must not recover");
    assert.notEqual(r.id, id);
    assert.ok(took < 3500, `answer took ${took} ms`);
    const me = await h.whoami(r);
    assert.equal(me.recovered, false);
    assert.equal(me.middlewareRan, true);
    assert.deepEqual(me.rooms, []);
    assert.deepEqual(me.data, {});

    await h.sleep(300);
    assert.deepEqual(disconnects, []);
    assert.equal(a.connected, true);
    const mine = await h.whoami(a);
    assert.equal(mine.id, id);
    assert.deepEqual(mine.rooms, [room]);
    assert.deepEqual(await h.ack(b, "room-members", id), [id]);
    await h.ack(b, "emit-numbered", { to: room, count: 2, tag });
    await ga.waitFor(3);
    await h.sleep(100);
    assert.deepEqual(ga.list.map((e) => e.i), [1, 1, 2]);
  } finally {
    await proxy.close();
  }
});

test("proxy blackhole really is silent: the client gets no answer while blackholed", { timeout: 10000 }, async () => {
  const proxy = await new h.TcpProxy(srv.port).listen();
  try {
    const a = await h.connect(proxy.url, "/", { transports: ["websocket"], reconnection: false });
    assert.deepEqual(await h.ackAll(a, "echo", 1), [1]);
    proxy.blackholeAll();
    await assert.rejects(h.ack(a, "echo", 2, h.ack.timeout(500)), /no ack/);
    assert.equal(a.connected, true, "no FIN/RST reached the client");
    assert.ok(proxy.active.length >= 1);
  } finally {
    await proxy.close();
  }
});

h.tetherOnly(
  "half-open, multiplexed: taking over / also frees /custom of the same silent connection; both recover",
  "the reference refuses the pid of a socket it still holds (§4.4)",
  { timeout: 20000 },
  async () => {
    const proxy = await new h.TcpProxy(srv.port).listen();
    try {
      const manager = h.track(new h.Manager(proxy.url, { transports: ["websocket"], reconnection: false }));
      const nsps = ["/", "/custom"];
      const socks = nsps.map((n) => h.track(manager.socket(n)));
      await Promise.all(socks.map((s) => h.onceConnected(s)));
      const emitters = await Promise.all(nsps.map((n) => h.connect(srv.url, n, { transports: ["websocket"] })));
      const tag = h.uid("mxho");
      for (let k = 0; k < 2; k++) {
        await h.ack(socks[k], "join", "mxho");
        await h.ack(emitters[k], "emit-numbered", { to: socks[k].id, count: 1, tag });
      }
      await h.until(() => socks.every((s) => s._lastOffset), 3000, "offsets");
      const creds = socks.map((s) => ({ id: s.id, pid: s._pid, offset: s._lastOffset }));
      proxy.blackholeAll();
      for (let k = 0; k < 2; k++) await h.ack(emitters[k], "emit-numbered", { to: "mxho", count: 3, tag });

      for (let k = 0; k < 2; k++) {
        const r = h.makeSocket(srv.url, nsps[k], { transports: ["websocket"], reconnection: false, autoConnect: false, timeout: 8000 });
        const g = h.collectNumbered(r, tag);
        r._pid = creds[k].pid;
        r._lastOffset = creds[k].offset;
        const t0 = Date.now();
        const p = h.onceConnected(r, 8000, `takeover ${nsps[k]}`);
        r.connect();
        await p;
        const took = Date.now() - t0;
        assert.equal(r.recovered, true, `${nsps[k]} recovered`);
        assert.equal(r.id, creds[k].id);
        assert.ok(took < 3500, `${nsps[k]}: took ${took} ms`);
        await g.waitFor(3);
        await h.sleep(100);
        assert.deepEqual(g.list.map((e) => e.i), [1, 2, 3], nsps[k]);
        assert.deepEqual((await h.whoami(r)).rooms, ["mxho"]);
      }
    } finally {
      await proxy.close();
    }
  },
);
