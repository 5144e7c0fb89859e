// §6.4 Graceful shutdown: on SIGTERM a node closes its clients' connections
// without a DISCONNECT packet, stores their sessions and exits within 10 s;
// they recover on the other nodes with zero loss.
"use strict";

const { test, before, after, afterEach } = require("node:test");
const assert = require("node:assert/strict");
const {
  Cluster,
  connect,
  recoverAs,
  closeAllClients,
  sleep,
  assertIncreasingNoDup,
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

const range = (n) => Array.from({ length: n }, (_, k) => k + 1);

test("SIGTERM: clients of the stopped node recover on the others with zero loss; it exits within 10 s", async () => {
  const room = uniqueTag("term");
  const victims = [];
  for (let k = 0; k < 24; k++) {
    const nsp = k % 6 === 5 ? "/custom" : "/";
    const c = await connect(cluster.url("A"), {
      name: `v${k}@A${nsp}`,
      nsp,
      transports: k % 4 === 1 ? ["polling"] : ["websocket"],
    });
    c.k = k;
    await c.ack("join", room);
    await c.ack("set-data", { k });
    victims.push(c);
  }
  const oldId = cluster.node("A").nodeId;
  const eb = await connect(cluster.url("B"), { name: "emitter@B" });
  const ec = await connect(cluster.url("C"), { name: "emitter@C", nsp: "/custom" });
  const tag = uniqueTag("flow");
  const M = 200;
  const flows = [
    eb.ackT(30000, "emit-numbered", { to: room, count: M, tag, intervalMs: 15 }),
    ec.ackT(30000, "emit-numbered", { to: room, count: M, tag, intervalMs: 15 }),
  ];
  await Promise.all(victims.map((c) => c.waitNumbered(tag, 10)));

  const stopping = cluster.node("A").stop(15000);
  await Promise.all(victims.map((c) => c.waitDisconnect(10000)));
  for (const c of victims) {
    assert.notEqual(c.disconnects[0], "io server disconnect", `${c.name}: no DISCONNECT packet on shutdown`);
  }
  // reconnect at once, alternately on B and C
  const restored = await Promise.all(
    victims.map((c, k) =>
      recoverAs(cluster.url(k % 2 ? "B" : "C"), c.creds(), { nsp: c.nsp, name: `r${k}`, timeout: 20000 }),
    ),
  );
  const stop = await stopping;
  assert.ok(stop.graceful, "the node exited on SIGTERM");
  assert.ok(stop.ms < 10000, `exited within 10 s (${stop.ms} ms)`);
  assert.equal(stop.exit.code, 0, `exit status ${JSON.stringify(stop.exit)}`);

  const who = await Promise.all(restored.map((r) => r.ack("whoami")));
  for (let k = 0; k < victims.length; k++) {
    assert.equal(who[k].recovered, true, `${victims[k].name} recovered`);
    assert.equal(who[k].id, victims[k].id);
    assert.deepEqual(who[k].rooms, [room]);
    assert.deepEqual(who[k].data, { k });
  }
  await Promise.all(flows);
  await Promise.all(restored.map((r, k) => r.waitNumbered(tag, M - victims[k].is(tag).length, 10000)));
  await sleep(300);
  for (let k = 0; k < victims.length; k++) {
    const all = [...victims[k].is(tag), ...restored[k].is(tag)];
    assertIncreasingNoDup(all, victims[k].name);
    assert.deepEqual(all, range(M), `${victims[k].name}: every event exactly once`);
  }

  // restarted on the same port: a new member with a new node-id
  await cluster.node("A").start();
  const a = await connect(cluster.url("A"));
  const newId = await a.ack("node-id");
  assert.notEqual(newId, oldId);
  const t2 = uniqueTag("after-restart");
  await eb.ack("emit-numbered", { count: 3, tag: t2 });
  await a.waitNumbered(t2, 3);
  await a.ack("emit-numbered", { count: 3, tag: t2 + "x" });
  await restored[1].waitNumbered(t2 + "x", 3);
});
