// §6.5 Engine outage: the proxy in front of Redis cuts every connection and
// refuses new ones for 3 s. No client is disconnected, the local events keep
// answering, emit-numbered is still acked (possibly late) with no duplicate and
// in order, and within 20 s after the backend is back, cross-node broadcasts
// and cross-node recovery work again.
"use strict";

const { test, before, after, afterEach } = require("node:test");
const assert = require("node:assert/strict");
const {
  Cluster,
  connect,
  recoverAs,
  closeAllClients,
  sleep,
  withTimeout,
  waitFor,
  assertExactly,
  assertSameOffsets,
  assertIncreasingNoDup,
  uniqueTag,
} = require("../lib/cluster");
const { TcpProxy } = require("../lib/proxy");

let cluster;
before(async () => {
  cluster = await Cluster.start(["A", "B"]);
});
after(async () => {
  closeAllClients();
  await cluster?.stopAll();
});
afterEach(() => closeAllClients());

const OUTAGE_MS = 3000;
const range = (n) => Array.from({ length: n }, (_, k) => k + 1);

test("backend outage: nodes keep serving, emits are acked without duplicates, the cluster heals within 20 s", async () => {
  const clients = [
    await connect(cluster.url("A"), { name: "a1" }),
    await connect(cluster.url("A"), { name: "a2", transports: ["polling"] }),
    await connect(cluster.url("B"), { name: "b1" }),
    await connect(cluster.url("B"), { name: "b2", nsp: "/custom" }),
  ];
  const [a1, a2, b1, b2] = clients;
  const ids = { A: cluster.node("A").nodeId, B: cluster.node("B").nodeId };
  const warm = uniqueTag("warm");
  await a1.ack("emit-numbered", { count: 1, tag: warm });
  await waitFor(() => [a1, a2, b1].every((c) => c.tagged(warm).length === 1), 5000, "warm-up broadcast");

  // a flow across the outage, from each node
  const flowA = uniqueTag("flowA");
  const flowB = uniqueTag("flowB");
  // (errors are kept, not thrown, so an early failure leaves no stray rejection)
  const settle = (p) => p.then((v) => ({ v }), (e) => ({ e }));
  const flows = [
    settle(a2.ackT(60000, "emit-numbered", { count: 120, tag: flowA, intervalMs: 50 })),
    settle(b1.ackT(60000, "emit-numbered", { count: 120, tag: flowB, intervalMs: 50 })),
  ];
  await sleep(500);

  const outage = cluster.proxy.outage(OUTAGE_MS);
  await sleep(300);
  // during the outage: local events answer at once
  for (const c of clients) {
    const t0 = Date.now();
    assert.deepEqual(await c.ackAll(2000, "echo", "ping", 1), ["ping", 1]);
    const w = await c.ackT(2000, "whoami");
    assert.equal(w.id, c.id);
    assert.equal(await c.ackT(2000, "node-id"), ids[c.url.endsWith(cluster.node("A").port) ? "A" : "B"]);
    assert.ok(Date.now() - t0 < 2000, `${c.name} answers during the outage`);
  }
  // new clients can connect and are served
  const fresh = [
    await connect(cluster.url("A"), { name: "fresh@A", timeout: 3000 }),
    await connect(cluster.url("B"), { name: "fresh@B", nsp: "/custom", timeout: 3000 }),
  ];
  for (const f of fresh) assert.deepEqual(await f.ackT(2000, "echo", { x: 1 }), { x: 1 });
  assert.equal((await fresh[0].ackT(2000, "whoami")).middlewareRan, true);
  // a recovery attempt during the outage (its outcome is left open, §6.5) is
  // answered with a CONNECT, not an error, and nothing crashes
  const att = await recoverAs(cluster.url("B"), { pid: "unknown-pid", offset: "1-0" }, { timeout: 15000 });
  assert.equal((await att.ackT(2000, "whoami")).recovered, false);
  // emits during the outage: acked, possibly late
  const during = uniqueTag("during");
  const duringAck = settle(a1.ackT(40000, "emit-numbered", { count: 10, tag: during }));
  await outage;
  const back = Date.now();

  const res = await withTimeout(duringAck, 20000, "emit-numbered requested during the outage is acked ≤ 20 s after");
  assert.deepEqual(res, { v: { emitted: 10 } });
  console.log(`# emit-numbered during the outage acked ${Date.now() - back} ms after the backend came back`);
  for (const f of await withTimeout(Promise.all(flows), 25000, "the flows are acked")) {
    assert.deepEqual(f, { v: { emitted: 120 } });
  }

  // cross-node broadcasts work again within 20 s
  let healedAt = null;
  while (Date.now() - back < 20000) {
    const t = uniqueTag("heal");
    await b1.ackT(20000, "emit-numbered", { count: 1, tag: t });
    try {
      await a1.waitNumbered(t, 1, 1000);
      healedAt = Date.now() - back;
      break;
    } catch {}
  }
  assert.ok(healedAt !== null, "cross-node broadcast works again within 20 s");
  console.log(`# cross-node broadcast healed ${healedAt} ms after the backend came back`);
  await sleep(500);

  // nobody was disconnected, no node exited
  for (const n of ["A", "B"]) assert.ok(cluster.node(n).isAlive(), `node ${n} is running`);
  for (const c of [...clients, ...fresh]) assert.deepEqual(c.disconnects, [], `${c.name} stayed connected`);
  // the events of the outage: maybe lost, never twice, in order
  for (const c of [a1, a2, b1]) {
    for (const t of [during, flowA, flowB]) assertIncreasingNoDup(c.is(t), `${c.name} ${t}`);
  }
  // a node delivers its own queued events once it can store them: the
  // emitter's own node has all of them
  assert.deepEqual(a1.is(during), range(10), "the emitter's node delivered them after the outage");

  // strict check after healing: each once, in order, same offsets, on both nodes
  const strict = uniqueTag("strict");
  await a2.ack("emit-numbered", { count: 10, tag: strict });
  await Promise.all([a1, a2, b1].map((c) => c.waitNumbered(strict, 10)));
  await sleep(300);
  for (const c of [a1, a2, b1]) assertExactly(c, strict, range(10));
  assertSameOffsets([a1, a2, b1], strict);
  const ctag = uniqueTag("custom");
  await fresh[0].ack("emit-numbered", { count: 3, tag: ctag }); // "/" on A
  await (await connect(cluster.url("A"), { nsp: "/custom" })).ack("emit-numbered", { count: 3, tag: ctag + "c" });
  await b2.waitNumbered(ctag + "c", 3);
  assert.deepEqual(b2.is(ctag), []);

  // cross-node recovery works again: a1 drops on A and recovers on B
  const creds = a1.creds();
  a1.emit("kill-transport");
  await a1.waitDisconnect();
  await cluster.waitGone("A", a1.id);
  const miss = uniqueTag("miss");
  await b1.ack("emit-numbered", { count: 5, tag: miss });
  const r = await recoverAs(cluster.url("B"), creds);
  const w = await r.ack("whoami");
  assert.equal(w.recovered, true);
  assert.equal(w.id, a1.id);
  await r.waitNumbered(miss, 5);
  await sleep(200);
  assertExactly(r, miss, range(5));
  // and a live socket still cannot be taken over
  const thief = await recoverAs(cluster.url("A"), b1.creds());
  assert.equal((await thief.ack("whoami")).recovered, false);
  assert.equal(b1.connected, true);
});

test("right after an outage, a live socket is not taken over by another node", async () => {
  // §6.2: "the pid of a socket that is connected and alive on any node does not
  // recover anywhere". The outage exempts recovery attempts made *during* it
  // (§6.5 "left open"), not the ones after the backend is back. Attempts on A
  // for the pids of B's live sockets start the moment the backend is back, while
  // B's heartbeat (7 s) may be about to lapse.
  const live = [];
  for (let k = 0; k < 20; k++) {
    const c = await connect(cluster.url("B"), { name: `live${k}@B` });
    await c.ack("emit-to-self", "x");
    live.push(c);
  }
  await cluster.proxy.outage(OUTAGE_MS);
  const thieves = await Promise.all(
    live.map(async (c, k) => {
      await sleep(k * 100); // attempts spread over the first 2 s after the outage
      const t = await recoverAs(cluster.url("A"), c.creds(), { name: `thief${k}@A`, timeout: 15000 });
      return { k, at: k * 100, who: await t.ack("whoami") };
    }),
  );
  const stolen = thieves.filter((t) => t.who.recovered);
  await sleep(300);
  for (const c of live) assert.deepEqual(c.disconnects, [], `${c.name} not disturbed`);
  assert.deepEqual(
    stolen.map((t) => `live${t.k} (attempt ${t.at} ms after the backend was back)`),
    [],
    "live sockets of B restored on A (same sid now connected on two nodes)",
  );
});

test("an append retried after its reply was lost is neither delivered nor replayed twice", async () => {
  // The node appends with a per-node sequence number so that an entry written
  // twice by a retry (the XADD reached Redis, its reply did not) is dropped.
  // Here the only publish of the cluster happens while the replies are lost:
  // the stream ends up with the entry twice, the second copy right after the
  // first. A client whose offset is the first copy recovers.
  const x = await connect(cluster.url("B"), { name: "x@B" });
  const e = await connect(cluster.url("A"), { name: "e@A" });
  const warm = uniqueTag("warm");
  await e.ack("emit-numbered", { count: 1, tag: warm });
  await x.waitNumbered(warm, 1);
  await sleep(200);
  const tag = uniqueTag("dup");
  const lost = cluster.proxy.loseReplies(1000, 1000);
  await sleep(200);
  const acked = e.ackT(30000, "emit-numbered", { count: 1, tag });
  await lost;
  assert.deepEqual(await acked, { emitted: 1 });
  await x.waitNumbered(tag, 1, 20000);
  await sleep(500);
  assert.deepEqual(x.is(tag), [1], "delivered once live");
  const copies = await cluster.logIdsContaining(tag);
  console.log(`# the entry is in the log ${copies.length} time(s): ${copies.join(", ")}`);
  const creds = x.creds();
  assert.equal(creds.offset, x.tagged(tag)[0].offset);
  x.emit("kill-transport");
  await x.waitDisconnect();
  await cluster.waitGone("B", x.id);
  // one more event while it is away, so the replay has something to carry
  const mid = uniqueTag("mid");
  await e.ack("emit-numbered", { count: 1, tag: mid });
  const r = await recoverAs(cluster.url("A"), creds);
  assert.equal((await r.ack("whoami")).recovered, true);
  await r.waitNumbered(mid, 1);
  await sleep(300);
  assert.deepEqual(
    r.numbered.map((n) => `${n.tag}#${n.i}`),
    [`${mid}#1`],
    "the replay after the first copy holds only the missed event (the second copy is the same event as the first)",
  );
});

test("a socket taken over while its node was cut off from the backend is let go when the node is back", async () => {
  // Node A is cut off from Redis for longer than its heartbeat lives (7 s), so
  // it looks dead. Its client's connection is half-open (nothing reaches the
  // client any more) and the client comes back on B, which restores the
  // session. When A is back, it reads B's probe of that pid, probes its own
  // socket, gets no answer and lets it go, well before its 45 s ping timeout,
  // without keeping a stale session over B's live one.
  const front = new TcpProxy({ targetHost: "127.0.0.1", targetPort: cluster.node("A").port });
  await front.listen();
  try {
    const room = uniqueTag("moved");
    const c = await connect(`http://127.0.0.1:${front.port}`, { name: "c@A" });
    await c.ack("join", room);
    await c.ack("set-data", { k: 1 });
    await c.ack("emit-to-self", "x");
    const creds = c.creds();
    front.dropReplies = true; // half-open: A's writes no longer reach the client
    const cut = cluster.proxies.A.outage(9000);
    await sleep(8000);
    const moved = await recoverAs(cluster.url("B"), creds, { name: "c@B", timeout: 15000 });
    const who = await moved.ack("whoami");
    assert.equal(who.recovered, true, "restored on B: A looks dead");
    assert.equal(who.id, c.id);
    assert.deepEqual(who.rooms, [room]);
    assert.deepEqual(who.data, { k: 1 });
    await cut;
    const t0 = Date.now();
    await cluster.waitGone("A", c.id, 15000);
    const took = Date.now() - t0;
    await sleep(1000);
    assert.equal(await cluster.hasKeptSession(creds.pid), false, "A kept no stale session");
    assert.equal(await cluster.liveRecordNode(creds.pid), cluster.node("B").nodeId, "B's live record stands");
    assert.equal(moved.connected, true);
    assert.ok(took < 15000, `A let go ${took} ms after the backend was back`);
  } finally {
    await front.close();
  }
});
