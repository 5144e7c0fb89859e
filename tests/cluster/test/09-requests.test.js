// Requests that reach every node and need answers (Redis pub/sub, as the Node
// adapter does): fetchSockets, broadcast with acks, server-side emits, and the
// socketsJoin / socketsLeave / disconnectSockets operators, across three nodes.
// The events used are beyond the contract: see servers/src/bin/conformance-server.rs
// (`cluster_events`).
"use strict";

const { test, before, after, afterEach } = require("node:test");
const assert = require("node:assert/strict");
const { Cluster, connect, recoverAs, closeAllClients, sleep, waitFor, uniqueTag } = require("../lib/cluster");

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

// One client per node, all in `room`, each with data {node}.
async function population(room) {
  const out = {};
  for (const n of NODES) {
    const c = await connect(cluster.url(n), { name: `${n}/ws` });
    await c.ack("join", room);
    await c.ack("set-data", { node: n });
    out[n] = c;
  }
  return out;
}

function answerQuestions(c, how = (args) => ({ from: c.id, got: args })) {
  c.socket.on("question", (...args) => {
    const cb = args.pop();
    const answer = how(args);
    if (answer !== undefined) cb(answer);
  });
}

test("fetchSockets: the targets of every node, with rooms and data; local: this node's only", async () => {
  const room = uniqueTag("fetch");
  const c = await population(room);
  const loner = await connect(cluster.url("C"), { name: "C/loner" });
  const all = [c.A.id, c.B.id, c.C.id].sort();

  const res = await c.A.ack("fetch-sockets", { to: room });
  assert.deepEqual(res.ids, all, "every node's members of the room");
  assert.deepEqual(res.local, [c.A.id]);
  const b = res.sockets.find((s) => s.id === c.B.id);
  assert.deepEqual(b.rooms, [room], "a remote socket's rooms, without its own id");
  assert.deepEqual(b.data, { node: "B" }, "a remote socket's data");

  const everyone = await c.B.ack("fetch-sockets", {});
  for (const id of [...all, loner.id]) assert.ok(everyone.ids.includes(id), `namespace-wide fetch has ${id}`);

  const except = await c.C.ack("fetch-sockets", { to: room, except: c.A.id });
  assert.deepEqual(except.ids, [c.B.id, c.C.id].sort());

  const local = await c.B.ack("fetch-sockets", { to: room, local: true });
  assert.deepEqual(local.ids, [c.B.id]);

  const other = await connect(cluster.url("B"), { nsp: "/custom" });
  const custom = await other.ack("fetch-sockets", { to: room });
  assert.deepEqual(custom.ids, [], "another namespace's room is another room");
});

test("fetchSockets: a node that does not answer makes the request time out, bounded", async () => {
  const room = uniqueTag("silent");
  const c = await population(room);
  const pid = cluster.node("C").child.pid;
  process.kill(pid, "SIGSTOP");
  try {
    const t0 = Date.now();
    const res = await c.A.ack("fetch-sockets", { to: room, timeoutMs: 700 });
    const took = Date.now() - t0;
    assert.match(res.error || "", /timed out/, "an error, not a partial list");
    assert.ok(took < 5000, `answered within the timeout (${took} ms)`);
  } finally {
    process.kill(pid, "SIGCONT");
  }
  await waitFor(async () => (await c.A.ack("fetch-sockets", { to: room })).ids?.length === 3, 10000, "C answers again");
});

test("broadcast with acks: one answer per target on every node, with its id", async () => {
  const room = uniqueTag("bcack");
  const c = await population(room);
  for (const n of NODES) answerQuestions(c[n]);
  const res = await c.B.ack("broadcast-ack", { to: room, args: [1, "two"] });
  assert.equal(res.complete, true);
  const answers = res.answers.map((a) => a.answer[0]);
  assert.deepEqual(
    answers.map((a) => a.from).sort(),
    [c.A.id, c.B.id, c.C.id].sort(),
    "every target answered once",
  );
  for (const a of answers) assert.deepEqual(a.got, [1, "two"]);
  for (const a of res.answers) assert.equal(a.id, a.answer[0].from, "the answer names its socket");
});

test("broadcast with acks: a remote target that does not answer is a timeout, the others answer", async () => {
  const room = uniqueTag("bcack-to");
  const c = await population(room);
  answerQuestions(c.A);
  answerQuestions(c.B);
  answerQuestions(c.C, () => undefined); // never answers
  const t0 = Date.now();
  const res = await c.A.ack("broadcast-ack", { to: room, args: [], timeoutMs: 800 });
  assert.ok(Date.now() - t0 < 5000);
  assert.equal(res.complete, true, "every node said how many sockets it reached");
  const ok = res.answers.filter((a) => a.answer).map((a) => a.id).sort();
  assert.deepEqual(ok, [c.A.id, c.B.id].sort());
  const failed = res.answers.filter((a) => a.error);
  assert.equal(failed.length, 1, "one timeout");
  assert.match(failed[0].error, /timed out/);
});

test("server-side emit reaches the other nodes' handlers, not the sender's", async () => {
  const c = {};
  for (const n of NODES) c[n] = await connect(cluster.url(n), { name: `${n}/ws` });
  const text = uniqueTag("hello");
  await c.A.ack("server-side-emit", text);
  await waitFor(() => c.B.events.some((e) => e.event === "node-hello" && e.args[0] === text), 5000, "B hears");
  await waitFor(() => c.C.events.some((e) => e.event === "node-hello" && e.args[0] === text), 5000, "C hears");
  await sleep(300);
  assert.ok(!c.A.events.some((e) => e.event === "node-hello"), "not the sending node");
  for (const n of ["B", "C"]) {
    assert.equal(c[n].events.filter((e) => e.event === "node-hello" && e.args[0] === text).length, 1, `${n} once`);
  }
});

test("server-side emit with ack: one answer from every other node", async () => {
  const a = await connect(cluster.url("A"));
  const res = await a.ack("server-side-ping", 3000);
  const expected = [cluster.node("B").nodeId, cluster.node("C").nodeId].sort();
  assert.deepEqual(res.ids, expected);
});

test("socketsJoin / socketsLeave act on sockets of other nodes, and the live record follows", async () => {
  const room = uniqueTag("sj");
  const c = await population(room);
  const extra = uniqueTag("extra");
  await c.A.ack("sockets-join", { to: room, room: extra });
  for (const n of NODES) {
    await waitFor(async () => (await c[n].ack("whoami")).rooms.includes(extra), 5000, `${n} joined ${extra}`);
  }
  const tag = uniqueTag("to-extra");
  await c.C.ack("emit-numbered", { to: extra, count: 3, tag });
  for (const n of NODES) await c[n].waitNumbered(tag, 3);

  await c.B.ack("sockets-leave", { to: c.A.id, room: extra });
  await waitFor(async () => !(await c.A.ack("whoami")).rooms.includes(extra), 5000, "A left");
  assert.ok((await c.C.ack("whoami")).rooms.includes(extra), "C did not");

  // The joined room is in C's live record: after a crash of C, it is restored elsewhere.
  const creds = c.C.creds();
  await cluster.node("C").kill();
  const back = await recoverAs(cluster.url("B"), creds, { timeout: 20000 });
  const who = await back.ack("whoami");
  assert.equal(who.recovered, true);
  assert.equal(who.id, c.C.id);
  assert.deepEqual(who.rooms, [room, extra].sort());
  await cluster.node("C").start();
});

test("disconnectSockets: a socket of another node is disconnected (not recoverable), or its transport closed", async () => {
  const room = uniqueTag("dc");
  const c = await population(room);
  await c.A.ack("disconnect-sockets", { to: c.B.id, close: false });
  assert.equal(await c.B.waitDisconnect(5000), "io server disconnect");
  await c.A.ack("disconnect-sockets", { to: c.C.id, close: true });
  assert.equal(await c.C.waitDisconnect(5000), "transport close");
  assert.equal(c.A.connected, true, "the sender's socket stays");
});
