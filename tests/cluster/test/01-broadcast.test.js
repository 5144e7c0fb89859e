// §6.2 Broadcasts, offsets and order across three nodes.
"use strict";

const { test, before, after, afterEach } = require("node:test");
const assert = require("node:assert/strict");
const {
  Cluster,
  connect,
  closeAllClients,
  sleep,
  assertExactly,
  assertSameOffsets,
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

const NODES = ["A", "B", "C"];
const range = (n) => Array.from({ length: n }, (_, k) => k + 1);

// On every node: a websocket client and a polling client in "/", and one in "/custom".
async function population() {
  const main = [];
  const custom = [];
  for (const n of NODES) {
    main.push(await connect(cluster.url(n), { name: `${n}/ws` }));
    main.push(await connect(cluster.url(n), { name: `${n}/poll`, transports: ["polling"] }));
    custom.push(await connect(cluster.url(n), { name: `${n}/custom`, nsp: "/custom" }));
  }
  return { main, custom };
}

test("node ids are distinct and stable across namespaces", async () => {
  const ids = new Set();
  for (const n of NODES) {
    const a = await connect(cluster.url(n));
    const b = await connect(cluster.url(n), { nsp: "/custom" });
    const ia = await a.ack("node-id");
    assert.equal(typeof ia, "string");
    assert.ok(ia.length > 0);
    assert.equal(await b.ack("node-id"), ia, "same id in every namespace");
    assert.equal(ia, cluster.node(n).nodeId, "stable for the life of the process");
    ids.add(ia);
  }
  assert.equal(ids.size, 3);
});

test("namespace broadcast: every client of every node gets each event once, same offsets, no other namespace", async () => {
  const { main, custom } = await population();
  const tag = uniqueTag("ns");
  const res = await main[0].ack("emit-numbered", { count: 20, tag });
  assert.deepEqual(res, { emitted: 20 });
  await Promise.all(main.map((c) => c.waitNumbered(tag, 20)));
  await sleep(300); // room for duplicates to show up
  for (const c of main) assertExactly(c, tag, range(20));
  assertSameOffsets(main, tag);
  for (const c of custom) assert.equal(c.numbered.length, 0, `${c.name} got an event of "/"`);
  // the emitter, on A, got the events through the cluster log like everyone
  assert.ok(main[0].tagged(tag).every((n) => typeof n.offset === "string"));
});

test("room broadcast reaches the members on every node, and only them", async () => {
  const { main, custom } = await population();
  const room = uniqueTag("room");
  // members: A/ws, B/poll, C/ws; non-members: A/poll, B/ws, C/poll
  const members = [main[0], main[3], main[4]];
  const others = main.filter((c) => !members.includes(c));
  for (const m of members) assert.deepEqual(await m.ack("join", room), [room]);
  // a "/custom" socket joins a room of the same name: another namespace, not reached
  await custom[2].ack("join", room);
  const tag = uniqueTag("room");
  // emitted from B/ws, which is not a member
  await main[2].ack("emit-numbered", { to: room, count: 15, tag, binary: true });
  await Promise.all(members.map((c) => c.waitNumbered(tag, 15)));
  await sleep(300);
  for (const c of members) {
    assertExactly(c, tag, range(15));
    for (const n of c.tagged(tag)) assert.deepEqual(n.bin, [n.i % 256, (n.i + 1) % 256, (n.i + 2) % 256]);
  }
  assertSameOffsets(members, tag);
  for (const c of [...others, ...custom]) assert.equal(c.tagged(tag).length, 0, `${c.name} is not a member`);
});

test("emit to a socket id on another node reaches that socket only", async () => {
  const { main, custom } = await population();
  const target = main[5]; // C/poll
  const tag = uniqueTag("sid");
  await main[0].ack("emit-numbered", { to: target.id, count: 10, tag }); // from A
  await target.waitNumbered(tag, 10);
  await sleep(300);
  assertExactly(target, tag, range(10));
  for (const c of [...main, ...custom]) if (c !== target) assert.equal(c.tagged(tag).length, 0, c.name);
  // emit-to-self gets an offset of the same log
  await target.ack("emit-to-self", { hello: 1 });
  const self = target.events.filter((e) => e.event === "self");
  assert.equal(self.length, 1);
  assert.deepEqual(self[0].args[0], { hello: 1 });
  assert.equal(cmpOffset(target.tagged(tag)[9].offset, self[0].args[1]), -1, "self comes after in the log");
});

test("cross-node order: an emit requested after the ack of another comes after it everywhere", async () => {
  const { main } = await population();
  const emitters = [main[0], main[2], main[4], main[1], main[5], main[3]]; // A, B, C, A, C, B
  const tags = [];
  for (const e of emitters) {
    const tag = uniqueTag("ord");
    tags.push(tag);
    await e.ack("emit-numbered", { count: 5, tag });
  }
  await Promise.all(main.map((c) => c.waitNumbered(tags.at(-1), 5)));
  await sleep(200);
  const expected = tags.flatMap((t) => range(5).map((i) => `${t}#${i}`));
  for (const c of main) {
    const got = c.numbered.filter((n) => tags.includes(n.tag)).map((n) => `${n.tag}#${n.i}`);
    assert.deepEqual(got, expected, `${c.name} order`);
  }
});

test("concurrent emits on three nodes: one cluster-wide order, the order of the offsets", async () => {
  const { main } = await population();
  const tags = [uniqueTag("cA"), uniqueTag("cB"), uniqueTag("cC")];
  await Promise.all([
    main[0].ack("emit-numbered", { count: 30, tag: tags[0] }),
    main[2].ack("emit-numbered", { count: 30, tag: tags[1] }),
    main[4].ack("emit-numbered", { count: 30, tag: tags[2] }),
  ]);
  await Promise.all(main.flatMap((c) => tags.map((t) => c.waitNumbered(t, 30))));
  await sleep(300);
  let ref = null;
  for (const c of main) {
    const got = c.numbered.filter((n) => tags.includes(n.tag));
    assert.equal(got.length, 90, `${c.name} count`);
    for (let k = 1; k < got.length; k++) {
      assert.equal(cmpOffset(got[k - 1].offset, got[k].offset), -1, `${c.name}: delivered in offset order`);
    }
    const seq = got.map((n) => `${n.tag}#${n.i}@${n.offset}`);
    if (ref === null) ref = seq;
    else assert.deepEqual(seq, ref, `${c.name} sees the same order as ${main[0].name}`);
  }
});

test("volatile broadcasts cross nodes without an offset", async () => {
  const { main } = await population();
  const tag = uniqueTag("vol");
  await main[1].ack("emit-numbered", { count: 5, tag, volatile: true });
  // volatile may be lost, but on loopback with idle clients they arrive
  await Promise.all(main.map((c) => c.waitNumbered(tag, 5)));
  await sleep(200);
  for (const c of main) {
    assertExactly(c, tag, range(5));
    for (const n of c.tagged(tag)) assert.equal(n.offset, undefined, "volatile events get no offset");
  }
});
