// A mixed cluster: one Node.js node (socket.io 4.8 + @socket.io/redis-streams-
// adapter 0.3, node-server.js) and one Tether node on the same Redis database.
// Tether writes the adapter's stream entries and session format, so
// broadcasts and recovery work both ways. Where the two cannot agree, the
// test asserts what actually happens and says why.
"use strict";

const { test, before, after, afterEach } = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");
const {
  Cluster,
  connect,
  recoverAs,
  closeAllClients,
  sleep,
  waitFor,
  assertExactly,
  assertSameOffsets,
  cmpOffset,
  uniqueTag,
} = require("../lib/cluster");

let cluster;
before(async () => {
  cluster = await Cluster.start(["T"]);
  await cluster.add("N", { cmd: `node ${JSON.stringify(path.join(__dirname, "..", "node-server.js"))}` });
});
after(async () => {
  closeAllClients();
  await cluster?.stopAll();
});
afterEach(() => closeAllClients());

const range = (n) => Array.from({ length: n }, (_, k) => k + 1);

// The node that held a socket writes `sio:session:<pid>` when it notices the
// disconnection. A Tether node that restores waits for it (it sees the live
// record and polls), but the Node adapter restores with one GETDEL and no
// retry: an attempt that arrives before the session is written just fails.
// So before a recovery on the Node server the test waits for the key.
async function waitSessionKey(pid) {
  await waitFor(async () => (await cluster.redis.exists(`sio:session:${pid}`)) === 1, 5000, `sio:session:${pid}`);
}

async function population() {
  return [
    await connect(cluster.url("T"), { name: "t-ws" }),
    await connect(cluster.url("T"), { name: "t-poll", transports: ["polling"] }),
    await connect(cluster.url("N"), { name: "n-ws" }),
    await connect(cluster.url("N"), { name: "n-poll", transports: ["polling"] }),
  ];
}

test("node ids differ", async () => {
  const [t, , n] = await population();
  const a = await t.ack("node-id");
  const b = await n.ack("node-id");
  assert.ok(a && b && a !== b);
});

test("broadcasts both ways: each client gets each event once, with the same offset", async () => {
  const all = await population();
  const [t1, t2, n1, n2] = all;
  const custom = await connect(cluster.url("N"), { nsp: "/custom" });
  for (const [from, label] of [
    [t1, "fromTether"],
    [n1, "fromNode"],
  ]) {
    const tag = uniqueTag(label);
    assert.deepEqual(await from.ack("emit-numbered", { count: 10, tag }), { emitted: 10 });
    await Promise.all(all.map((c) => c.waitNumbered(tag, 10)));
    await sleep(300);
    for (const c of all) assertExactly(c, tag, range(10), label);
    assertSameOffsets(all, tag);
    assert.deepEqual(custom.is(tag), [], "not in another namespace");
  }
  // rooms and binary attachments, both ways (JSON and base64 MessagePack entries)
  const room = uniqueTag("room");
  await t2.ack("join", room);
  await n2.ack("join", room);
  for (const from of [t1, n1]) {
    const tag = uniqueTag("bin");
    await from.ack("emit-numbered", { to: room, count: 5, tag, binary: true });
    await Promise.all([t2, n2].map((c) => c.waitNumbered(tag, 5)));
    await sleep(200);
    for (const c of [t2, n2]) {
      assertExactly(c, tag, range(5));
      for (const e of c.tagged(tag)) assert.deepEqual(e.bin, [e.i % 256, (e.i + 1) % 256, (e.i + 2) % 256]);
    }
    assertSameOffsets([t2, n2], tag);
    assert.deepEqual(t1.is(tag), []);
    assert.deepEqual(n1.is(tag), []);
  }
  // to a socket id held by the other implementation
  for (const [from, target] of [
    [t1, n2],
    [n1, t2],
  ]) {
    const tag = uniqueTag("sid");
    await from.ack("emit-numbered", { to: target.id, count: 3, tag });
    await target.waitNumbered(tag, 3);
    await sleep(200);
    assertExactly(target, tag, range(3));
    for (const c of all) if (c !== target) assert.deepEqual(c.is(tag), []);
  }
});

test("order: Tether clients see the stream order; the Node node may not (§6.6)", async () => {
  // Tether delivers every entry from its reader, in stream order, its own
  // included. The Node adapter delivers its own broadcast to its sockets as
  // soon as XADD returns, before earlier entries of other nodes that its
  // reader has not read yet. So only the Tether clients are held to the
  // cluster-wide order; the Node clients are only held to "each once".
  const all = await population();
  const [t1, t2, n1, n2] = all;
  const tags = [];
  for (let round = 0; round < 4; round++) {
    for (const from of [t1, n1]) {
      const tag = uniqueTag("ord");
      tags.push(tag);
      await from.ack("emit-numbered", { count: 50, tag });
    }
  }
  await Promise.all(all.map((c) => c.waitNumbered(tags.at(-1), 50)));
  await sleep(300);
  const seqOf = (c) => c.numbered.filter((n) => tags.includes(n.tag));
  for (const c of [t1, t2]) {
    const got = seqOf(c);
    assert.deepEqual(
      got.map((n) => `${n.tag}#${n.i}`),
      tags.flatMap((t) => range(50).map((i) => `${t}#${i}`)),
      `${c.name}: in request order`,
    );
    for (let k = 1; k < got.length; k++) assert.equal(cmpOffset(got[k - 1].offset, got[k].offset), -1);
  }
  let outOfOrder = 0;
  for (const c of [n1, n2]) {
    for (const t of tags) assertExactly(c, t, range(50), "each once");
    const got = seqOf(c);
    for (let k = 1; k < got.length; k++) if (cmpOffset(got[k - 1].offset, got[k].offset) > 0) outOfOrder++;
  }
  console.log(`# Node clients: ${outOfOrder} event(s) delivered before an event with a smaller offset`);
});

test("a Tether client recovers on the Node server", async () => {
  const x = await connect(cluster.url("T"), { name: "x@T" });
  const room = uniqueTag("room");
  await x.ack("join", room);
  await x.ack("set-data", { from: "tether", n: 1 });
  await x.ack("emit-to-self", "warm");
  const creds = x.creds();
  x.emit("kill-transport");
  await x.waitDisconnect();
  await cluster.waitGone("T", x.id);
  await waitSessionKey(creds.pid);
  const t = await connect(cluster.url("T"));
  const n = await connect(cluster.url("N"));
  const tags = [uniqueTag("t-ns"), uniqueTag("n-room"), uniqueTag("t-sid"), uniqueTag("n-other")];
  await t.ack("emit-numbered", { count: 3, tag: tags[0] });
  await n.ack("emit-numbered", { to: room, count: 3, tag: tags[1] });
  await t.ack("emit-numbered", { to: x.id, count: 3, tag: tags[2] });
  await n.ack("emit-numbered", { to: "elsewhere", count: 3, tag: tags[3] });
  const y = await recoverAs(cluster.url("N"), creds, { name: "x@N" });
  const w = await y.ack("whoami");
  assert.equal(w.recovered, true, "the Node server restores the session Tether wrote");
  assert.equal(w.id, x.id);
  assert.equal(y.pid, creds.pid);
  assert.equal(w.middlewareRan, false);
  assert.deepEqual(w.rooms, [room]);
  assert.deepEqual(w.data, { from: "tether", n: 1 });
  await y.waitNumbered(tags[2], 3);
  await sleep(200);
  assert.deepEqual(
    y.numbered.map((e) => `${e.tag}#${e.i}`),
    tags.slice(0, 3).flatMap((tg) => range(3).map((i) => `${tg}#${i}`)),
    "replay of the events of both nodes, in order",
  );
  // one-shot: the Node adapter took it with GETDEL; Tether does not restore it again
  const again = await recoverAs(cluster.url("T"), creds);
  assert.equal((await again.ack("whoami")).recovered, false);
  // Tether's own per-namespace mark of the session is left behind (harmless:
  // it expires with the session's window; the Node adapter does not know it)
  assert.equal(await cluster.redis.exists(`tether:session-nsp:${creds.pid}`), 1);
});

test("a Node client recovers on the Tether server", async () => {
  const x = await connect(cluster.url("N"), { name: "x@N" });
  const room = uniqueTag("room");
  await x.ack("join", room);
  await x.ack("set-data", { from: "node", n: 2 });
  await x.ack("emit-to-self", "warm");
  const creds = x.creds();
  x.emit("kill-transport");
  await x.waitDisconnect();
  await cluster.waitGone("N", x.id);
  await waitSessionKey(creds.pid);
  const t = await connect(cluster.url("T"));
  const n = await connect(cluster.url("N"));
  const tags = [uniqueTag("n-ns"), uniqueTag("t-room"), uniqueTag("n-sid"), uniqueTag("t-other")];
  await n.ack("emit-numbered", { count: 3, tag: tags[0] });
  await t.ack("emit-numbered", { to: room, count: 3, tag: tags[1], binary: true });
  await n.ack("emit-numbered", { to: x.id, count: 3, tag: tags[2] });
  await t.ack("emit-numbered", { to: "elsewhere", count: 3, tag: tags[3] });
  const y = await recoverAs(cluster.url("T"), creds, { name: "x@T" });
  const w = await y.ack("whoami");
  assert.equal(w.recovered, true, "Tether restores the session the Node adapter wrote");
  assert.equal(w.id, x.id);
  assert.equal(y.pid, creds.pid);
  assert.equal(w.middlewareRan, false);
  assert.deepEqual(w.rooms, [room]);
  assert.deepEqual(w.data, { from: "node", n: 2 });
  await y.waitNumbered(tags[2], 3);
  const live = uniqueTag("live");
  await n.ack("emit-numbered", { count: 2, tag: live });
  await y.waitNumbered(live, 2);
  await sleep(200);
  assert.deepEqual(
    y.numbered.map((e) => `${e.tag}#${e.i}`),
    [...tags.slice(0, 3), live].flatMap((tg) => range(tg === live ? 2 : 3).map((i) => `${tg}#${i}`)),
    "replay of the events of both nodes in order, then live",
  );
  const again = await recoverAs(cluster.url("N"), creds);
  assert.equal((await again.ack("whoami")).recovered, false, "consumed");
});

test("where they differ: a session's namespace is not checked across implementations", async () => {
  // Tether marks its kept sessions with `tether:session-nsp:<pid>` and refuses
  // a pid in another namespace. The Node adapter's session ({sid, pid, rooms,
  // data}) names no namespace and its keys are not per namespace (§6.6):
  // - Tether cannot tell where a Node session belongs, so a Node client's pid
  //   of "/" is restored by Tether in "/custom" (the contract says: new
  //   connection). Tether could only refuse every unmarked session, which
  //   would break the recovery of Node clients altogether.
  // - the Node adapter ignores Tether's mark, so a Tether client's pid of "/"
  //   is restored by the Node server in "/custom".
  const x = await connect(cluster.url("N"), { name: "x@N/" });
  await x.ack("emit-to-self", "warm");
  const creds = x.creds();
  x.emit("kill-transport");
  await x.waitDisconnect();
  await waitSessionKey(creds.pid);
  const y = await recoverAs(cluster.url("T"), creds, { nsp: "/custom" });
  const w = await y.ack("whoami");
  assert.equal(w.recovered, true, "actual: Tether restores a Node session of / in /custom");
  assert.equal(w.nsp, "/custom");
  assert.equal(w.id, x.id);

  const t = await connect(cluster.url("T"), { name: "t@T/" });
  await t.ack("emit-to-self", "warm");
  const tcreds = t.creds();
  t.emit("kill-transport");
  await t.waitDisconnect();
  await cluster.waitGone("T", t.id);
  await waitSessionKey(tcreds.pid);
  // Tether itself keeps the namespaces apart...
  const u = await recoverAs(cluster.url("T"), tcreds, { nsp: "/custom" });
  assert.equal((await u.ack("whoami")).recovered, false, "Tether refuses its own session of / in /custom");
  // ...the Node server does not
  const v = await recoverAs(cluster.url("N"), tcreds, { nsp: "/custom" });
  const wv = await v.ack("whoami");
  assert.equal(wv.recovered, true, "actual: the Node server restores a Tether session of / in /custom");
  assert.equal(wv.id, t.id);
});

test("where they differ: a failed attempt on the Node server consumes a Tether session (§6.6)", async () => {
  // The adapter runs GETDEL on the session and checks the offset in parallel:
  // with an offset that is not in the stream the attempt fails AND the session
  // is gone. Tether itself never consumes on a failed attempt.
  const x = await connect(cluster.url("T"), { name: "x@T" });
  await x.ack("emit-to-self", "warm");
  const creds = x.creds();
  x.emit("kill-transport");
  await x.waitDisconnect();
  await cluster.waitGone("T", x.id);
  await waitSessionKey(creds.pid);
  // on Tether first: fails, consumes nothing
  const f1 = await recoverAs(cluster.url("T"), { pid: creds.pid, offset: "1-1" });
  assert.equal((await f1.ack("whoami")).recovered, false);
  assert.equal(await cluster.redis.exists(`sio:session:${creds.pid}`), 1, "Tether left it");
  // then on the Node server, with the same offset that is not in the stream
  const f2 = await recoverAs(cluster.url("N"), { pid: creds.pid, offset: "1-1" });
  assert.equal((await f2.ack("whoami")).recovered, false);
  assert.equal(await cluster.redis.exists(`sio:session:${creds.pid}`), 0, "actual: the Node adapter consumed it");
  const y = await recoverAs(cluster.url("T"), creds);
  assert.equal((await y.ack("whoami")).recovered, false, "actual: the session is lost after the Node server's failed attempt");
});

test("where they differ: a crash of the Node server loses its sessions (§6.6, socket.io-redis-streams-adapter#27)", async () => {
  // The adapter writes a session only at disconnection; after SIGKILL there is
  // nothing to restore, on Tether or anywhere. (Tether nodes keep a live record
  // for this, see 05-sigkill.test.js.)
  const x = await connect(cluster.url("N"), { name: "x@N" });
  await x.ack("set-data", { lost: true });
  await x.ack("emit-to-self", "warm");
  const creds = x.creds();
  await cluster.node("N").kill();
  await x.waitDisconnect();
  const y = await recoverAs(cluster.url("T"), creds, { timeout: 15000 });
  const w = await y.ack("whoami");
  await cluster.node("N").start();
  assert.equal(w.recovered, false, "actual: the session died with the Node process");
  assert.deepEqual(w.data, {});
});

test("a live socket is not taken over across implementations", async () => {
  // Neither side writes a kept session for a connected socket, and the Node
  // adapter only restores kept sessions, so both attempts get new sessions.
  const t = await connect(cluster.url("T"), { name: "live@T" });
  const n = await connect(cluster.url("N"), { name: "live@N" });
  await t.ack("emit-to-self", "x");
  await n.ack("emit-to-self", "x");
  const a = await recoverAs(cluster.url("N"), t.creds());
  const b = await recoverAs(cluster.url("T"), n.creds());
  assert.equal((await a.ack("whoami")).recovered, false);
  assert.equal((await b.ack("whoami")).recovered, false);
  assert.equal(t.connected && n.connected, true);
});

// Requests that need answers travel over Redis pub/sub in the adapter's format
// (MessagePack of {uid, nsp, type, data} on `socket.io#<nsp>#` and
// `socket.io#<nsp>#<uid>#`), so each side answers the other's.
test("fetchSockets both ways: each side lists the other's sockets, with rooms and data", async () => {
  const room = uniqueTag("mixed-fetch");
  const t = await connect(cluster.url("T"), { name: "t" });
  const n = await connect(cluster.url("N"), { name: "n" });
  for (const [c, who] of [[t, "tether"], [n, "node"]]) {
    await c.ack("join", room);
    await c.ack("set-data", { who });
  }
  for (const [asker, other, who] of [[t, n, "node"], [n, t, "tether"]]) {
    const res = await asker.ack("fetch-sockets", { to: room });
    assert.deepEqual(res.ids, [t.id, n.id].sort(), `${asker.name} sees both`);
    assert.deepEqual(res.local, [asker.id]);
    const s = res.sockets.find((x) => x.id === other.id);
    assert.deepEqual(s.rooms, [room]);
    assert.deepEqual(s.data, { who });
  }
});

test("broadcast with acks both ways: the other side's sockets answer", async () => {
  const room = uniqueTag("mixed-ack");
  const t = await connect(cluster.url("T"), { name: "t" });
  const n = await connect(cluster.url("N"), { name: "n" });
  for (const c of [t, n]) {
    await c.ack("join", room);
    c.socket.on("question", (...args) => args.pop()({ from: c.id, got: args }));
  }
  for (const asker of [t, n]) {
    const res = await asker.ack("broadcast-ack", { to: room, args: ["q"] });
    assert.ok(!res.error, `${asker.name}: ${res.error}`);
    const froms = res.answers.map((a) => a.answer[0].from).sort();
    assert.deepEqual(froms, [t.id, n.id].sort(), `${asker.name} hears both`);
    for (const a of res.answers) assert.deepEqual(a.answer[0].got, ["q"]);
  }
});

test("server-side emits both ways, with and without acks", async () => {
  const t = await connect(cluster.url("T"), { name: "t" });
  const n = await connect(cluster.url("N"), { name: "n" });
  assert.deepEqual((await t.ack("server-side-ping", 3000)).ids, [cluster.node("N").nodeId]);
  assert.deepEqual((await n.ack("server-side-ping", 3000)).ids, [cluster.node("T").nodeId]);
  const a = uniqueTag("from-t");
  const b = uniqueTag("from-n");
  await t.ack("server-side-emit", a);
  await n.ack("server-side-emit", b);
  await waitFor(() => n.events.some((e) => e.event === "node-hello" && e.args[0] === a), 5000, "N hears T");
  await waitFor(() => t.events.some((e) => e.event === "node-hello" && e.args[0] === b), 5000, "T hears N");
});

test("socketsJoin and disconnectSockets both ways", async () => {
  const t = await connect(cluster.url("T"), { name: "t" });
  const n = await connect(cluster.url("N"), { name: "n" });
  const r1 = uniqueTag("j1");
  const r2 = uniqueTag("j2");
  await t.ack("sockets-join", { to: n.id, room: r1 });
  await n.ack("sockets-join", { to: t.id, room: r2 });
  await waitFor(async () => (await n.ack("whoami")).rooms.includes(r1), 5000, "N's socket joined");
  await waitFor(async () => (await t.ack("whoami")).rooms.includes(r2), 5000, "T's socket joined");
  await t.ack("disconnect-sockets", { to: n.id });
  assert.equal(await n.waitDisconnect(5000), "io server disconnect");
  const t2 = await connect(cluster.url("T"), { name: "t2" });
  const n2 = await connect(cluster.url("N"), { name: "n2" });
  await n2.ack("disconnect-sockets", { to: t2.id });
  assert.equal(await t2.waitDisconnect(5000), "io server disconnect");
});
