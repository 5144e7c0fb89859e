// §6.2 Cluster-wide sessions: recovery on another node, one-shot, failed
// attempts consume nothing, a live socket cannot be taken over, replay to live.
"use strict";

const { test, before, after, afterEach } = require("node:test");
const assert = require("node:assert/strict");
const {
  Cluster,
  connect,
  recoverAs,
  closeAllClients,
  sleep,
  waitFor,
  assertExactly,
  assertIncreasingNoDup,
  cmpOffset,
  uniqueTag,
} = require("../lib/cluster");

let cluster;
before(async () => {
  cluster = await Cluster.start(["A", "B", "C"]);
});
after(async () => {
  closeAllClients();
  await cluster?.stopAll();
});
afterEach(() => closeAllClients());

const range = (n, from = 1) => Array.from({ length: n }, (_, k) => k + from);

// A client on `node` with a room, data and an offset; returns it.
async function prepared(node, { room = uniqueTag("r"), data = { k: 1 }, nsp = "/" } = {}) {
  const c = await connect(cluster.url(node), { name: `victim@${node}`, nsp });
  assert.deepEqual(await c.ack("join", room), [room]);
  assert.deepEqual(await c.ack("set-data", data), data);
  await c.ack("emit-to-self", "warm"); // gives it an offset
  assert.ok(c.lastOffset, "has an offset");
  c.room = room;
  return c;
}

async function killTransport(c, node) {
  c.emit("kill-transport");
  await c.waitDisconnect();
  await cluster.waitGone(node, c.id, 10000, c.nsp);
}

test("recovery on another node: same id, rooms, data, no middleware, missed events once in order, then live", async () => {
  const x = await prepared("A", { data: { k: 1, s: "x" } });
  const other = await connect(cluster.url("B"), { name: "other@B" });
  const custom = await connect(cluster.url("C"), { name: "custom@C", nsp: "/custom" });
  const creds = x.creds();
  const id = x.id;
  await killTransport(x, "A");

  // during the outage, from B and C: namespace, its room, its id, another room,
  // volatile, another namespace
  const t = { ns: uniqueTag("ns"), room: uniqueTag("room"), sid: uniqueTag("sid"), no: uniqueTag("no") };
  await other.ack("emit-numbered", { count: 5, tag: t.ns });
  const c2 = await connect(cluster.url("C"));
  await c2.ack("emit-numbered", { to: x.room, count: 5, tag: t.room, binary: true });
  await other.ack("emit-numbered", { to: id, count: 5, tag: t.sid });
  await other.ack("emit-numbered", { to: "someone-elses-room", count: 5, tag: t.no });
  await c2.ack("emit-numbered", { count: 5, tag: t.no, volatile: true });
  await custom.ack("emit-numbered", { count: 5, tag: t.no });

  const y = await recoverAs(cluster.url("B"), creds, { name: "recovered@B" });
  assert.equal(y.id, id, "same sid");
  assert.equal(y.pid, creds.pid, "same pid");
  const who = await y.ack("whoami");
  assert.equal(who.id, id);
  assert.equal(who.recovered, true);
  assert.equal(who.middlewareRan, false);
  assert.deepEqual(who.rooms, [x.room]);
  assert.deepEqual(who.data, { k: 1, s: "x" });
  await y.waitNumbered(t.sid, 5);
  // then live events, from A
  const tl = uniqueTag("live");
  const a = await connect(cluster.url("A"));
  await a.ack("emit-numbered", { count: 3, tag: tl });
  await y.waitNumbered(tl, 3);
  await sleep(300);
  const got = y.numbered.map((n) => `${n.tag}#${n.i}`);
  const want = [t.ns, t.room, t.sid, tl].flatMap((tg) => range(tg === tl ? 3 : 5).map((i) => `${tg}#${i}`));
  assert.deepEqual(got, want, "missed events once, in order, then live ones; nothing else");
  for (const n of y.tagged(t.room)) assert.deepEqual(n.bin, [n.i % 256, (n.i + 1) % 256, (n.i + 2) % 256]);
  // it is a member of its room again, on B
  assert.deepEqual(await (await cluster.observer("B")).ack("room-members", x.room), [id]);
});

test("one-shot across nodes: simultaneous attempts on A, B and C, exactly one recovers", async () => {
  for (let round = 0; round < 3; round++) {
    const x = await prepared("A");
    const creds = x.creds();
    await killTransport(x, "A");
    const where = round === 0 ? ["A", "B"] : ["A", "B", "C", "A", "B", "C"];
    const tries = await Promise.all(where.map((n, k) => recoverAs(cluster.url(n), creds, { name: `try${k}@${n}` })));
    const who = await Promise.all(tries.map((t) => t.ack("whoami")));
    const winners = who.filter((w) => w.recovered);
    assert.equal(winners.length, 1, `round ${round}: exactly one of ${where.join(",")} recovers: ${JSON.stringify(who)}`);
    assert.equal(winners[0].id, x.id);
    assert.deepEqual(winners[0].rooms, [x.room]);
    for (const loser of who.filter((w) => !w.recovered)) {
      assert.notEqual(loser.id, x.id, "the others get a new sid");
      assert.equal(loser.middlewareRan, true);
      assert.deepEqual(loser.rooms, []);
      assert.deepEqual(loser.data, {});
    }
    // and again later, on C, while the winner is connected: no
    const r = await recoverAs(cluster.url("C"), creds, { name: "again@C" });
    const wr = await r.ack("whoami");
    assert.equal(wr.recovered, false);
    assert.notEqual(wr.id, x.id);
    closeAllClients();
  }
});

test("a consumed session is not restored again after an explicit disconnect", async () => {
  const x = await prepared("A");
  const creds = x.creds();
  await killTransport(x, "A");
  const y = await recoverAs(cluster.url("B"), creds);
  assert.equal((await y.ack("whoami")).recovered, true);
  y.socket.disconnect(); // DISCONNECT packet: not recoverable
  await cluster.waitGone("B", y.id);
  const z = await recoverAs(cluster.url("C"), { pid: creds.pid, offset: y.lastOffset || creds.offset });
  const wz = await z.ack("whoami");
  assert.equal(wz.recovered, false);
  assert.notEqual(wz.id, x.id);
});

test("failed attempts on other nodes consume nothing", async () => {
  const x = await prepared("A", { data: { f: 1 } });
  const creds = x.creds();
  await killTransport(x, "A");
  const attempts = [
    ["B", "/", { pid: creds.pid, offset: "1-1" }, "an offset that is not in the log"],
    ["C", "/", { pid: creds.pid, offset: "not-an-offset" }, "a malformed offset"],
    ["B", "/custom", creds, "another namespace"],
    ["C", "/", { pid: creds.pid, offset: 42 }, "a number as offset"],
  ];
  for (const [node, nsp, auth, what] of attempts) {
    const f = await recoverAs(cluster.url(node), auth, { nsp, name: `fail@${node}${nsp}` });
    const w = await f.ack("whoami");
    assert.equal(w.recovered, false, what);
    assert.notEqual(w.id, x.id, what);
    assert.equal(w.middlewareRan, true, what);
    f.close();
  }
  const tag = uniqueTag("after-fail");
  await (await connect(cluster.url("B"))).ack("emit-numbered", { to: x.room, count: 4, tag });
  const y = await recoverAs(cluster.url("C"), creds, { name: "ok@C" });
  const w = await y.ack("whoami");
  assert.equal(w.recovered, true, "the session survived the failed attempts");
  assert.equal(w.id, x.id);
  assert.deepEqual(w.data, { f: 1 });
  await y.waitNumbered(tag, 4);
  await sleep(200);
  assertExactly(y, tag, range(4));
});

test("a live socket on A is not taken over from B, and is not disturbed", async () => {
  const x = await prepared("A");
  const creds = x.creds();
  const t0 = Date.now();
  const y = await recoverAs(cluster.url("B"), creds, { name: "thief@B" });
  const took = Date.now() - t0;
  const wy = await y.ack("whoami");
  assert.equal(wy.recovered, false, "no takeover of a live socket");
  assert.notEqual(wy.id, x.id);
  assert.ok(took < 10000, `answered within the 10 s bound (${took} ms)`);
  // x is untouched: connected, same rooms, still gets broadcasts
  assert.equal(x.connected, true);
  assert.deepEqual(x.disconnects, []);
  const wx = await x.ack("whoami");
  assert.equal(wx.id, x.id);
  assert.deepEqual(wx.rooms, [x.room]);
  const tag = uniqueTag("still");
  await y.ack("emit-numbered", { to: x.room, count: 3, tag });
  await x.waitNumbered(tag, 3);
  assert.deepEqual(await (await cluster.observer("A")).ack("room-members", x.id), [x.id]);
  // and after that failed attempt the session is still one-shot-restorable once x drops
  const creds2 = x.creds();
  await killTransport(x, "A");
  const z = await recoverAs(cluster.url("C"), creds2);
  assert.equal((await z.ack("whoami")).recovered, true);
});

test("immediate recovery on another node, without waiting for the holder to let go", async () => {
  // The client reconnects elsewhere as soon as its transport drops; the node
  // that held it may not have written the session yet (§6.2: it may hold the
  // CONNECT reply until it knows).
  for (let round = 0; round < 3; round++) {
    const x = await prepared("A");
    const creds = x.creds();
    x.emit("kill-transport");
    await x.waitDisconnect();
    const t0 = Date.now();
    const y = await recoverAs(cluster.url("B"), creds);
    const w = await y.ack("whoami");
    assert.equal(w.recovered, true, `round ${round}`);
    assert.equal(w.id, x.id);
    assert.ok(Date.now() - t0 < 10000);
    closeAllClients();
  }
});

test("from replay to live: events keep flowing from every node while the socket is restored on another", async () => {
  const x = await prepared("A");
  const emitters = [
    await connect(cluster.url("A"), { name: "emitter@A" }),
    await connect(cluster.url("B"), { name: "emitter@B" }),
    await connect(cluster.url("C"), { name: "emitter@C" }),
  ];
  const tags = emitters.map(() => uniqueTag("flow"));
  const N = 120;
  const done = emitters.map((e, k) =>
    e.ackT(30000, "emit-numbered", { to: k === 1 ? x.room : undefined, count: N, tag: tags[k], intervalMs: 12 }),
  );
  await x.waitNumbered(tags[2], 20);
  x.emit("kill-transport");
  await x.waitDisconnect();
  const creds = x.creds(); // the offset of the last event it got before the drop
  const before = tags.map((t) => x.is(t));
  await sleep(150); // some events happen while it is away
  const y = await recoverAs(cluster.url("B"), creds);
  assert.equal((await y.ack("whoami")).recovered, true);
  await Promise.all(done);
  await Promise.all(tags.map((t, k) => y.waitNumbered(t, N - before[k].length, 15000).catch(() => {})));
  await sleep(300);
  tags.forEach((t, k) => {
    const all = [...before[k], ...y.is(t)];
    assertIncreasingNoDup(all, `flow from ${"ABC"[k]}: old + restored socket`);
    assert.deepEqual(all, range(N), `flow from ${"ABC"[k]}: every event exactly once (before the drop, replayed or live)`);
  });
  // and in one order: the offsets the old and the new socket saw only grow
  const offs = [...x.numbered, ...y.numbered].filter((n) => tags.includes(n.tag)).map((n) => n.offset);
  for (let k = 1; k < offs.length; k++) assert.equal(cmpOffset(offs[k - 1], offs[k]), -1, "one cluster-wide order");
});

test("a session kept by one node expires on every node with its window (/short: 2 s)", async () => {
  const x = await prepared("A", { nsp: "/short" });
  const y0 = await prepared("A", { nsp: "/short" });
  const creds = x.creds();
  const credsY = y0.creds();
  await killTransport(x, "A");
  await killTransport(y0, "A");
  // within the window, on another node: yes
  const y = await recoverAs(cluster.url("B"), credsY, { nsp: "/short" });
  assert.equal((await y.ack("whoami")).recovered, true, "within the window");
  // past it: no
  await sleep(2600);
  const z = await recoverAs(cluster.url("C"), creds, { nsp: "/short" });
  assert.equal((await z.ack("whoami")).recovered, false, "past the 2 s window");
});

test("stored events are kept for the recovery window, however many there are (§4.3)", async () => {
  // §4.3: the server keeps every stored event for at least the window
  // (2 minutes in "/"); a recovery only fails on an offset the namespace no
  // longer stores. 15 000 events to an empty room take a fraction of a
  // second; a socket that dropped just before must still recover.
  const x = await prepared("A");
  const creds = x.creds();
  await killTransport(x, "A");
  const e = await connect(cluster.url("B"));
  for (let k = 0; k < 3; k++) await e.ackT(60000, "emit-numbered", { to: uniqueTag("nobody"), count: 5000, tag: "bulk" });
  const tag = uniqueTag("after-bulk");
  await e.ack("emit-numbered", { count: 2, tag });
  const y = await recoverAs(cluster.url("C"), creds);
  const w = await y.ack("whoami");
  assert.equal(w.recovered, true, "recovered 15 000 events (and well under a second) after it dropped");
  await y.waitNumbered(tag, 2);
  assert.deepEqual(y.is("bulk"), []);
});

test("recovery on a node whose reader lags behind the client's offset: nothing twice, nothing lost", async () => {
  // B's link to the backend answers 400 ms late: when the client arrives on B
  // with the offset of an event A delivered, B has not read that event yet.
  const x = await prepared("A");
  const e = await connect(cluster.url("A"), { name: "emitter@A" });
  cluster.proxies.B.replyDelay = 400;
  try {
    const tag = uniqueTag("lag");
    await e.ack("emit-numbered", { count: 5, tag });
    await x.waitNumbered(tag, 5);
    x.emit("kill-transport");
    await x.waitDisconnect();
    const creds = x.creds();
    const y = await recoverAs(cluster.url("B"), creds, { timeout: 15000 });
    assert.equal((await y.ack("whoami")).recovered, true);
    await e.ack("emit-numbered", { count: 3, tag: tag + "-after" });
    await y.waitNumbered(tag + "-after", 3, 10000);
    await sleep(800);
    assert.deepEqual(y.is(tag), [], "the events it had are not delivered again");
    assertExactly(y, tag + "-after", range(3));
  } finally {
    cluster.proxies.B.replyDelay = 0;
  }
});

test("direct emits in flight when the transport dies are replayed on another node, binary and large ones too", async () => {
  for (let round = 0; round < 3; round++) {
    const x = await prepared("A");
    const creds = x.creds();
    const big = Buffer.alloc(300 * 1024, round + 1);
    const n0 = x.events.length;
    // in one breath: a direct emit, a large binary echo, then the transport dies
    x.emit("emit-to-self", { round });
    x.emit("echo", "big", big);
    x.emit("kill-transport");
    await x.waitDisconnect();
    const got = x.events.slice(n0).filter((e) => e.event === "self" || e.event === "echo");
    const offset = x.lastOffset; // whatever it got of them before the drop
    const y = await recoverAs(cluster.url("C"), { pid: creds.pid, offset }, { timeout: 15000 });
    assert.equal((await y.ack("whoami")).recovered, true);
    await waitFor(
      () => got.length + y.events.filter((e) => e.event === "self" || e.event === "echo").length >= 2,
      5000,
      () => `round ${round}: self and echo (before the drop: ${got.map((e) => e.event)})`,
    );
    await sleep(200);
    const all = [...got, ...y.events.filter((e) => e.event === "self" || e.event === "echo")];
    assert.deepEqual(
      all.map((e) => e.event),
      ["self", "echo"],
      `round ${round}: each once, in order (${got.length} before the drop)`,
    );
    assert.deepEqual(all[0].args[0], { round });
    assert.equal(all[1].args[0], "big");
    assert.ok(Buffer.from(all[1].args[1]).equals(big), "the 300 kB binary is intact");
    closeAllClients();
  }
});

test("recovery in /custom on another node keeps /custom's rooms apart", async () => {
  const x = await prepared("B", { nsp: "/custom", data: { c: true } });
  const creds = x.creds();
  await killTransport(x, "B");
  const tag = uniqueTag("cust");
  const e = await connect(cluster.url("A"), { nsp: "/custom" });
  await e.ack("emit-numbered", { to: x.room, count: 3, tag });
  // an emit to the same room name in "/" must not be replayed
  await (await connect(cluster.url("A"))).ack("emit-numbered", { to: x.room, count: 3, tag: tag + "-root" });
  // the pid does not recover in "/"
  const wrong = await recoverAs(cluster.url("C"), creds);
  assert.equal((await wrong.ack("whoami")).recovered, false);
  const y = await recoverAs(cluster.url("C"), creds, { nsp: "/custom" });
  const w = await y.ack("whoami");
  assert.equal(w.recovered, true);
  assert.equal(w.nsp, "/custom");
  assert.deepEqual(w.rooms, [x.room]);
  assert.deepEqual(w.data, { c: true });
  await y.waitNumbered(tag, 3);
  await sleep(200);
  assertExactly(y, tag, range(3));
  assert.deepEqual(y.is(tag + "-root"), []);
});
