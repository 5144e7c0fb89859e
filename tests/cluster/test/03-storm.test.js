// §1 / §6.2: 200 clients over two nodes drop at once and all recover on the
// other node at the same moment, with zero loss.
"use strict";

const { test, before, after, afterEach } = require("node:test");
const assert = require("node:assert/strict");
const { Cluster, connect, recoverAs, closeAllClients, sleep, waitFor, uniqueTag } = require("../lib/cluster");

let cluster;
before(async () => {
  cluster = await Cluster.start(["A", "B"]);
});
after(async () => {
  closeAllClients();
  await cluster?.stopAll();
});
afterEach(() => closeAllClients());

const N = 200;
const GROUPS = 4;
const range = (n) => Array.from({ length: n }, (_, k) => k + 1);

async function inBatches(items, size, f) {
  const out = [];
  for (let k = 0; k < items.length; k += size) {
    out.push(...(await Promise.all(items.slice(k, k + size).map(f))));
  }
  return out;
}

for (const mode of ["other", "random"]) {
  test(`storm: ${N} clients drop at once and recover on the ${mode} node with zero loss`, async () => {
    const home = (k) => (k % 2 === 0 ? "A" : "B");
    const away = (k) => (mode === "other" ? (home(k) === "A" ? "B" : "A") : Math.random() < 0.5 ? "A" : "B");
    const rooms = range(GROUPS).map(() => uniqueTag("g"));
    const clients = await inBatches(range(N), 50, async (n) => {
      const k = n - 1;
      const c = await connect(cluster.url(home(k)), {
        name: `c${k}@${home(k)}`,
        transports: k % 10 === 0 ? ["polling", "websocket"] : ["websocket"],
      });
      c.k = k;
      await c.ack("join", rooms[k % GROUPS]);
      await c.ack("set-data", { k });
      return c;
    });
    const ea = await connect(cluster.url("A"), { name: "emitter@A" });
    const eb = await connect(cluster.url("B"), { name: "emitter@B" });
    const warm = uniqueTag("warm");
    await ea.ack("emit-numbered", { count: 1, tag: warm });
    await Promise.all(clients.map((c) => c.waitNumbered(warm, 1)));
    const creds = clients.map((c) => c.creds());

    // all at once
    for (const c of clients) c.emit("kill-transport");
    await Promise.all(clients.map((c) => c.waitDisconnect(20000)));

    // what happens while they are away
    const tNs = uniqueTag("ns");
    await ea.ack("emit-numbered", { count: 5, tag: tNs });
    const tRoom = rooms.map(() => uniqueTag("room"));
    for (let g = 0; g < GROUPS; g++) {
      await (g % 2 ? ea : eb).ack("emit-numbered", { to: rooms[g], count: 3, tag: tRoom[g] });
    }
    const targeted = clients.filter((c) => c.k % 20 === 3);
    const tSid = uniqueTag("sid");
    for (const c of targeted) await eb.ack("emit-numbered", { to: c.id, count: 2, tag: tSid });

    // all reconnect at the same moment
    const t0 = Date.now();
    const restored = await Promise.all(
      clients.map((c, k) => recoverAs(cluster.url(away(k)), creds[k], { name: `r${k}@${away(k)}`, timeout: 30000 })),
    );
    const reconnectMs = Date.now() - t0;
    const who = await Promise.all(restored.map((r) => r.ackT(20000, "whoami")));
    for (let k = 0; k < N; k++) {
      assert.equal(who[k].recovered, true, `client ${k} recovered`);
      assert.equal(who[k].id, clients[k].id, `client ${k} same id`);
      assert.deepEqual(who[k].rooms, [rooms[k % GROUPS]], `client ${k} rooms`);
      assert.deepEqual(who[k].data, { k }, `client ${k} data`);
      assert.equal(who[k].middlewareRan, false);
    }

    const tLive = uniqueTag("live");
    await eb.ack("emit-numbered", { count: 5, tag: tLive });
    await waitFor(
      () => restored.every((r) => r.tagged(tLive).length >= 5),
      15000,
      () => `live events: ${restored.filter((r) => r.tagged(tLive).length < 5).length} clients short`,
    );
    await sleep(300);
    for (let k = 0; k < N; k++) {
      const r = restored[k];
      const want = [
        ...range(5).map((i) => `${tNs}#${i}`),
        ...range(3).map((i) => `${tRoom[k % GROUPS]}#${i}`),
        ...(clients[k].k % 20 === 3 ? range(2).map((i) => `${tSid}#${i}`) : []),
        ...range(5).map((i) => `${tLive}#${i}`),
      ];
      assert.deepEqual(
        r.numbered.map((n) => `${n.tag}#${n.i}`),
        want,
        `client ${k}: every missed event once, in order, then the live ones`,
      );
    }
    // the old node lists none of them, the new node lists all of them
    const countOn = async (node) => {
      const o = await cluster.observer(node);
      let n = 0;
      for (const g of rooms) n += (await o.ack("room-members", g)).length;
      return n;
    };
    assert.equal((await countOn("A")) + (await countOn("B")), N);
    console.log(`# storm (${mode}): ${N} recoveries in ${reconnectMs} ms`);
  });
}
