// Redis restarted under traffic, for real (§6.5 and "Redis down or restarted: nodes keep
// serving their local clients, log, retry with backoff, and resume cross-node delivery;
// no crash, no unbounded memory"). 06-outage cuts the network in front of a Redis that
// stays up; here each test starts a redis-server of its own on a free port (never the
// shared one, which other test files use), three nodes connected straight to it, clients
// on every node and emit-numbered flows from several nodes, then SIGKILLs Redis and
// starts it again on the same port:
//   1. with its data (AOF, fsync on every write): nothing is lost at all;
//   2. without its data: the cluster works again, and the live records of connected
//      sockets are written again, so a node that crashes after the restart still has
//      its sockets recoverable elsewhere.
// In both: no node exits, no client is disconnected, echo/whoami/node-id keep answering
// while Redis is down, emit-numbered is still acked, and within 20 s after Redis is back
// cross-node broadcasts reach every node's clients exactly once, in offset order.
"use strict";

const { test } = require("node:test");
const assert = require("node:assert/strict");
const {
  Cluster,
  connect,
  recoverAs,
  closeAllClients,
  sleep,
  withTimeout,
  waitFor,
  cmpOffset,
  assertExactly,
  assertSameOffsets,
  assertIncreasingNoDup,
  uniqueTag,
} = require("../lib/cluster");
const { RedisServer } = require("../lib/redis-server");

const NODES = ["A", "B", "C"];
const DOWN_MS = 2500; // how long Redis stays down (the heartbeat lives 7 s)
const FLOW = 100; // events per flow, 50 ms apart: 5 s, across the restart
const range = (n) => Array.from({ length: n }, (_, k) => k + 1);
// (errors are kept, not thrown, so an early failure leaves no stray rejection)
const settle = (p) => p.then((v) => ({ v }), (e) => ({ e: String(e) }));

// A redis-server of the test's own and a cluster on it; both torn down after the test,
// whatever happens, with the logs printed if it failed.
async function setup(t, { persist }) {
  const redis = new RedisServer({ persist, name: persist ? "redis-aof" : "redis-nodata" });
  const env = { cluster: null, redis };
  t.after(async () => {
    closeAllClients();
    await env.cluster?.stopAll();
    await redis.destroy();
  });
  await redis.start();
  console.log(`# ${redis.version.split(" ").slice(0, 3).join(" ")} on port ${redis.port}, persist=${persist}`);
  env.cluster = await Cluster.start(NODES, { db: 0, redis: { host: "127.0.0.1", port: redis.port } });
  return env;
}

async function withLogs(env, body) {
  try {
    await body();
  } catch (e) {
    console.log(env.cluster?.logs().slice(-20000));
    console.log(env.redis.log().slice(-5000));
    throw e;
  }
}

async function clientsOnEveryNode(cluster) {
  return [
    await connect(cluster.url("A"), { name: "a1@A" }),
    await connect(cluster.url("A"), { name: "a2@A", transports: ["polling"] }),
    await connect(cluster.url("B"), { name: "b1@B" }),
    await connect(cluster.url("C"), { name: "c1@C" }),
  ];
}

function nodeOf(cluster, c) {
  return NODES.find((n) => c.url === cluster.url(n));
}

// Flows from A, B and C, then Redis is SIGKILLed and, DOWN_MS later, started again on
// the same port. Checks what must hold while it is down, and that everything asked
// during the downtime is acked after it. Returns the tags of the flows.
async function restartUnderTraffic({ cluster, redis }, clients, receivers) {
  const warm = uniqueTag("warm");
  await clients[0].ack("emit-numbered", { count: 1, tag: warm });
  await Promise.all(receivers.map((c) => c.waitNumbered(warm, 1, 5000)));

  const emitters = { A: clients[1], B: clients[2], C: clients[3] };
  const flows = {};
  const flowAcks = [];
  for (const [n, c] of Object.entries(emitters)) {
    flows[n] = uniqueTag(`flow${n}`);
    flowAcks.push(settle(c.ackT(60000, "emit-numbered", { count: FLOW, tag: flows[n], intervalMs: 50 })));
  }
  await sleep(700);

  const down = Date.now();
  await redis.kill();
  console.log(`# Redis SIGKILLed under traffic (pid gone, port ${redis.port} refuses)`);
  await sleep(300);
  // while Redis is down: local events answer at once, on every node
  for (const c of clients) {
    const t0 = Date.now();
    assert.deepEqual(await c.ackAll(2000, "echo", "ping", 1), ["ping", 1], `${c.name} echo`);
    assert.equal((await c.ackT(2000, "whoami")).id, c.id, `${c.name} whoami`);
    assert.equal(await c.ackT(2000, "node-id"), cluster.node(nodeOf(cluster, c)).nodeId, `${c.name} node-id`);
    assert.ok(Date.now() - t0 < 2000, `${c.name} answers while Redis is down`);
  }
  // a new client can connect and is served
  const fresh = await connect(cluster.url("C"), { name: "fresh@C", timeout: 3000 });
  assert.deepEqual(await fresh.ackT(2000, "echo", { x: 1 }), { x: 1 });
  assert.equal((await fresh.ackT(2000, "whoami")).middlewareRan, true);
  fresh.close();
  // emits asked while Redis is down, on two nodes
  const during = uniqueTag("during");
  const duringAcks = [
    settle(clients[0].ackT(40000, "emit-numbered", { count: 5, tag: during })),
    settle(clients[3].ackT(40000, "emit-numbered", { count: 5, tag: during + "c" })),
  ];
  await sleep(Math.max(0, down + DOWN_MS - Date.now()));
  for (const n of NODES) assert.ok(cluster.node(n).isAlive(), `node ${n} runs while Redis is down`);

  await redis.start();
  const back = Date.now();
  console.log(`# Redis back after ${back - down} ms`);

  const res = await withTimeout(Promise.all(duringAcks), 20000, "emit-numbered asked while Redis was down is acked ≤ 20 s after");
  assert.deepEqual(res, [{ v: { emitted: 5 } }, { v: { emitted: 5 } }]);
  console.log(`# emit-numbered asked while Redis was down acked ${Date.now() - back} ms after it was back`);
  for (const f of await withTimeout(Promise.all(flowAcks), 25000, "the flows are acked")) {
    assert.deepEqual(f, { v: { emitted: FLOW } });
  }

  // cross-node broadcasts work again within 20 s: from every node to every other node
  let healedAt = null;
  while (Date.now() - back < 20000) {
    const t = uniqueTag("heal");
    await Promise.all(Object.values(emitters).map((c, k) => c.ackT(20000, "emit-numbered", { count: 1, tag: `${t}-${k}` })));
    try {
      await Promise.all(
        receivers.flatMap((r) => Object.values(emitters).map((_, k) => r.waitNumbered(`${t}-${k}`, 1, 1000))),
      );
      healedAt = Date.now() - back;
      break;
    } catch {}
  }
  assert.ok(healedAt !== null, "cross-node broadcasts work again within 20 s after Redis is back");
  console.log(`# cross-node broadcasts healed ${healedAt} ms after Redis was back`);
  return { flows, during, duringTags: [during, during + "c"] };
}

// After the restart: one emit-numbered of 10 per node, one after the other; every
// client of every node gets each event once, the same offsets everywhere, all in
// offset order, and the earlier emit's events first.
async function assertStrictBroadcasts(cluster, emitters, receivers) {
  const tags = [];
  for (const e of emitters) {
    const t = uniqueTag(`strict-${nodeOf(cluster, e)}`);
    tags.push(t);
    assert.deepEqual(await e.ack("emit-numbered", { count: 10, tag: t }), { emitted: 10 });
  }
  await Promise.all(receivers.flatMap((r) => tags.map((t) => r.waitNumbered(t, 10))));
  await sleep(300);
  for (const t of tags) {
    for (const r of receivers) assertExactly(r, t, range(10), "after the restart");
    assertSameOffsets(receivers, t);
  }
  const expected = tags.flatMap((t) => range(10).map((i) => `${t}#${i}`));
  for (const r of receivers) {
    const got = r.numbered.filter((n) => tags.includes(n.tag));
    assert.deepEqual(
      got.map((n) => `${n.tag}#${n.i}`),
      expected,
      `${r.name}: the three emits in the order they were acked`,
    );
    for (let k = 1; k < got.length; k++) {
      assert.equal(cmpOffset(got[k - 1].offset, got[k].offset), -1, `${r.name}: offsets grow`);
    }
  }
}

test("Redis SIGKILLed under traffic and restarted with its data (AOF): no node exits, no client drops, nothing is lost", async (t) => {
  const env = await setup(t, { persist: true });
  const { cluster } = env;
  await withLogs(env, async () => {
    const clients = await clientsOnEveryNode(cluster);
    const [a1, a2, b1, c1] = clients;
    const { flows, duringTags } = await restartUnderTraffic(env, clients, clients);

    // Redis kept every appended entry and the nodes retried what it had not stored:
    // every flow reaches every client of every node, each event once, in order.
    await Promise.all(clients.flatMap((c) => Object.values(flows).map((f) => c.waitNumbered(f, FLOW, 10000))));
    for (const d of duringTags) await Promise.all(clients.map((c) => c.waitNumbered(d, 5, 10000)));
    await sleep(300);
    for (const c of clients) {
      for (const f of Object.values(flows)) assertExactly(c, f, range(FLOW), "across the restart");
      for (const d of duringTags) assertExactly(c, d, range(5), "asked while Redis was down");
    }
    for (const f of Object.values(flows)) assertSameOffsets(clients, f);

    await assertStrictBroadcasts(cluster, [a2, b1, c1], clients);

    for (const n of NODES) assert.ok(cluster.node(n).isAlive(), `node ${n} is running`);
    for (const c of clients) assert.deepEqual(c.disconnects, [], `${c.name} stayed connected`);

    // a client dropped after the restart recovers on another node with zero loss, while
    // a flow from a third node goes on
    const flowR = uniqueTag("flowR");
    const flowRAck = c1.ackT(30000, "emit-numbered", { count: 60, tag: flowR, intervalMs: 25 });
    await a1.waitNumbered(flowR, 10);
    const creds = a1.creds();
    a1.emit("kill-transport");
    await a1.waitDisconnect();
    await cluster.waitGone("A", a1.id);
    const miss = uniqueTag("miss");
    await c1.ack("emit-numbered", { count: 5, tag: miss });
    await c1.ack("emit-numbered", { to: a1.id, count: 3, tag: miss + "-sid" });
    const r = await recoverAs(cluster.url("B"), creds, { name: "a1→B" });
    const w = await r.ack("whoami");
    assert.equal(w.recovered, true, "a1 recovered on B after the restart");
    assert.equal(w.id, a1.id);
    assert.equal(w.middlewareRan, false);
    assert.deepEqual(await flowRAck, { emitted: 60 });
    await r.waitNumbered(flowR, 60 - a1.is(flowR).length);
    await r.waitNumbered(miss, 5);
    await r.waitNumbered(miss + "-sid", 3);
    await sleep(300);
    const all = [...a1.is(flowR), ...r.is(flowR)];
    assertIncreasingNoDup(all, "a1 then its recovery");
    assert.deepEqual(all, range(60), "every flow event exactly once, before the drop or after the recovery");
    assertExactly(r, miss, range(5), "missed while away");
    assertExactly(r, miss + "-sid", range(3), "missed while away");

    for (const n of NODES) assert.ok(cluster.node(n).isAlive(), `node ${n} is running`);
    for (const c of [a2, b1, c1]) assert.deepEqual(c.disconnects, [], `${c.name} stayed connected`);
  });
});

test("Redis SIGKILLed under traffic and restarted without its data: the cluster heals, and a node that crashes afterwards still has its sockets recoverable", async (t) => {
  const env = await setup(t, { persist: false });
  const { cluster, redis } = env;
  await withLogs(env, async () => {
    const clients = await clientsOnEveryNode(cluster);
    const [, a2, b1, c1] = clients;
    // sockets of A with rooms and data, written to Redis before the restart (lost with it)
    const room = uniqueTag("room");
    const victims = [];
    for (let k = 0; k < 6; k++) {
      const v = await connect(cluster.url("A"), { name: `v${k}@A`, transports: k % 3 === 2 ? ["polling"] : ["websocket"] });
      await v.ack("join", room);
      await v.ack("set-data", { k });
      victims.push(v);
    }
    const everyone = [...clients, ...victims];
    const { flows, duringTags } = await restartUnderTraffic(env, clients, everyone);
    const t0 = Date.now();

    // entries that were in the lost stream and not read yet are lost; none twice, in order
    for (const c of everyone) {
      for (const tag of [...Object.values(flows), ...duringTags]) assertIncreasingNoDup(c.is(tag), `${c.name} ${tag}`);
    }
    // a node delivers its own emits queued while Redis was down once it can store them
    assertExactly(clients[0], duringTags[0], range(5), "queued on A while Redis was down");
    assertExactly(c1, duringTags[1], range(5), "queued on C while Redis was down");

    await assertStrictBroadcasts(cluster, [a2, b1, c1], everyone);

    for (const n of NODES) assert.ok(cluster.node(n).isAlive(), `node ${n} is running`);
    for (const c of everyone) assert.deepEqual(c.disconnects, [], `${c.name} stayed connected`);

    // A's live records are written again (nothing about these sockets changed since
    // the restart: only the nodes' refresh can bring them back)
    const nodeA = cluster.node("A").nodeId;
    const keys = victims.map((v) => `tether:live:${v.pid}`);
    const rewritten = await waitFor(
      async () => {
        const owners = await Promise.all(keys.map((k) => cluster.redis.hGet(k, "node")));
        return owners.every((o) => o === nodeA) && Date.now();
      },
      15000,
      "the live records of A's sockets are written again within 15 s after the restart",
      100,
    );
    console.log(`# A's live records written again ${rewritten - t0} ms after the cluster healed (${redis.url} was empty)`);

    // A crashes: its sockets recover on B and C with their rooms and data, zero loss
    const crash = Date.now();
    await cluster.node("A").kill();
    await Promise.all(victims.map((v) => v.waitDisconnect(5000)));
    const missed = uniqueTag("missed");
    await c1.ack("emit-numbered", { to: room, count: 4, tag: missed });
    await b1.ack("emit-numbered", { count: 2, tag: missed + "-ns" });
    const restored = await Promise.all(
      victims.map((v, k) => recoverAs(cluster.url(k % 2 ? "B" : "C"), v.creds(), { name: `r${k}`, timeout: 15000 })),
    );
    const within = Date.now() - crash;
    assert.ok(within < 10000, `all reconnected within 10 s of the crash (${within} ms)`);
    console.log(`# A's ${victims.length} sockets reconnected on B/C ${within} ms after A's SIGKILL`);
    const who = await Promise.all(restored.map((r) => r.ack("whoami")));
    for (let k = 0; k < victims.length; k++) {
      assert.equal(who[k].recovered, true, `${victims[k].name} recovered after A crashed (Redis had lost its live record)`);
      assert.equal(who[k].id, victims[k].id);
      assert.deepEqual(who[k].rooms, [room], "rooms kept");
      assert.deepEqual(who[k].data, { k }, "data kept");
    }
    await Promise.all(restored.map((r) => r.waitNumbered(missed, 4).then(() => r.waitNumbered(missed + "-ns", 2))));
    await sleep(300);
    for (const r of restored) {
      assertExactly(r, missed, range(4), "missed while away");
      assertExactly(r, missed + "-ns", range(2), "missed while away");
    }
    for (const n of ["B", "C"]) assert.ok(cluster.node(n).isAlive(), `node ${n} is running`);
    for (const c of [b1, c1]) assert.deepEqual(c.disconnects, [], `${c.name} stayed connected`);
  });
});
