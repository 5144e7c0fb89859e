// §4.4 failed recovery attempts: every one is a normal new connection, never
// an error, and (where the contract requires it) the real session stays
// restorable. One-shot sessions.
"use strict";

const assert = require("node:assert/strict");
const h = require("../lib/harness");
const { test } = h;

const srv = h.useServer();

const WS = { transports: ["websocket"] };

// A socket in a room with data and an offset, dropped with kill-transport
// (no automatic reconnection). Returns its credentials.
async function droppedSession(nsp = "/") {
  const a = await h.connect(srv.url, nsp, { ...WS, reconnection: false });
  const room = h.uid("edge");
  await h.ack(a, "join", room);
  await h.ack(a, "set-data", { owner: "a" });
  await h.ack(a, "emit-to-self", "offset");
  await h.until(() => a._lastOffset, 2000, "offset");
  const cred = { id: a.id, pid: a._pid, offset: a._lastOffset, room, nsp, socket: a };
  const disc = h.onceEvent(a, "disconnect");
  a.emit("kill-transport");
  await disc;
  return cred;
}

// Assert that `s` is a brand-new session (not the one of `cred`).
async function assertNewSession(s, cred, label) {
  assert.ok(!s.recovered, `${label}: client must not report recovered`);
  assert.notEqual(s.id, cred.id, `${label}: must get a new sid`);
  assert.notEqual(s._pid, cred.pid, `${label}: must get a new pid`);
  const me = await h.whoami(s);
  assert.equal(me.id, s.id);
  assert.equal(me.recovered, false, `${label}: whoami.recovered`);
  assert.equal(me.middlewareRan, true, `${label}: middleware runs`);
  assert.deepEqual(me.rooms, [], `${label}: no rooms`);
  assert.deepEqual(me.data, {}, `${label}: empty data`);
}

// Assert that the real session can still be restored, with its replay.
async function assertRestorable(cred, emitter, tag, expectedCount) {
  const r = h.makeSocket(srv.url, cred.nsp, { ...WS, reconnection: false, autoConnect: false });
  const g = h.collectNumbered(r, tag);
  r._pid = cred.pid;
  r._lastOffset = cred.offset;
  const p = h.onceConnected(r);
  r.connect();
  await p;
  assert.equal(r.recovered, true, "the real session must still be restorable");
  assert.equal(r.id, cred.id);
  const me = await h.whoami(r);
  assert.deepEqual(me.rooms, [cred.room]);
  assert.deepEqual(me.data, { owner: "a" });
  await g.waitFor(expectedCount);
  await h.sleep(100);
  assert.deepEqual(g.list.map((e) => e.i), Array.from({ length: expectedCount }, (_, k) => k + 1));
  return r;
}

const TEN_KB = "p".repeat(10 * 1024);

test("malformed pid or offset -> normal new session; the real session stays restorable", async () => {
  const cred = await droppedSession("/");
  const b = await h.connect(srv.url, "/", WS);
  const tag = h.uid("missed");
  await h.ack(b, "emit-numbered", { to: cred.room, count: 3, tag });

  const bad = [
    ["pid number", { pid: 12345, offset: cred.offset }],
    ["pid null", { pid: null, offset: cred.offset }],
    ["pid object", { pid: { pid: cred.pid }, offset: cred.offset }],
    ["pid array", { pid: [cred.pid], offset: cred.offset }],
    ["pid empty", { pid: "", offset: cred.offset }],
    ["pid 10 kB", { pid: TEN_KB, offset: cred.offset }],
    ["pid true", { pid: true, offset: cred.offset }],
    ["offset number", { pid: cred.pid, offset: 1 }],
    ["offset null", { pid: cred.pid, offset: null }],
    ["offset object", { pid: cred.pid, offset: { o: cred.offset } }],
    ["offset array", { pid: cred.pid, offset: [cred.offset] }],
    ["offset empty", { pid: cred.pid, offset: "" }],
    ["offset 10 kB", { pid: cred.pid, offset: TEN_KB }],
    ["both 10 kB", { pid: TEN_KB, offset: TEN_KB }],
  ];
  for (const [label, auth] of bad) {
    // The auth object is sent as the CONNECT payload exactly as given.
    const s = h.makeSocket(srv.url, "/", { ...WS, reconnection: false, autoConnect: false, auth });
    const g = h.collectNumbered(s, tag);
    const p = h.onceConnected(s, 5000, label);
    s.connect();
    await p;
    await assertNewSession(s, cred, label);
    assert.equal(g.list.length, 0, `${label}: nothing replayed`);
    s.disconnect();
  }
  await assertRestorable(cred, b, tag, 3);
});

test("unknown pid and unknown offset -> new session; the real session stays restorable", async () => {
  const cred = await droppedSession("/");
  const b = await h.connect(srv.url, "/", WS);
  const tag = h.uid("missed");
  await h.ack(b, "emit-numbered", { to: cred.room, count: 2, tag });

  const attempts = [
    ["unknown pid", { pid: cred.pid + "x", offset: cred.offset }],
    ["unknown pid (reversed)", { pid: [...cred.pid].reverse().join(""), offset: cred.offset }],
    ["unknown offset", { pid: cred.pid, offset: cred.offset + "x" }],
    ["offset of nothing", { pid: cred.pid, offset: "0" }],
  ];
  for (const [label, { pid, offset }] of attempts) {
    const s = await h.recoverAs(srv.url, "/", { pid, offset, ...WS });
    await assertNewSession(s, cred, label);
    s.disconnect();
  }
  await assertRestorable(cred, b, tag, 2);
});

test("pid of another namespace -> new session; the real session stays restorable", async () => {
  const cred = await droppedSession("/custom");
  // an offset that is valid in "/" (so only the namespace is wrong)
  const o = await h.connect(srv.url, "/", WS);
  await h.ack(o, "emit-to-self", "x");
  await h.until(() => o._lastOffset, 2000, "offset in /");
  const b = await h.connect(srv.url, "/custom", WS);
  const tag = h.uid("missed");
  await h.ack(b, "emit-numbered", { to: cred.room, count: 2, tag });

  for (const [nsp, offset] of [["/", o._lastOffset], ["/", cred.offset], ["/short", cred.offset]]) {
    const s = await h.recoverAs(srv.url, nsp, { pid: cred.pid, offset, ...WS });
    await assertNewSession(s, cred, `pid of /custom presented on ${nsp}`);
    s.disconnect();
  }
  await assertRestorable(cred, b, tag, 2);
});

test("pid of a live, connected socket -> new session; the live socket is not disturbed", async () => {
  const live = await h.connect(srv.url, "/", { ...WS, reconnection: false });
  const room = h.uid("live");
  await h.ack(live, "join", room);
  await h.ack(live, "set-data", { live: true });
  await h.ack(live, "emit-to-self", "x");
  await h.until(() => live._lastOffset, 2000, "offset");
  const disconnects = [];
  live.on("disconnect", (r) => disconnects.push(r));
  const cred = { id: live.id, pid: live._pid, offset: live._lastOffset };

  const t0 = Date.now();
  const s = await h.recoverAs(srv.url, "/", { pid: cred.pid, offset: cred.offset, ...WS });
  const took = Date.now() - t0;
  await assertNewSession(s, cred, "pid of a live socket");
  assert.ok(took < 4000, `answer took ${took} ms`);

  // live socket: still connected, same id, same rooms, still receives events
  await h.sleep(300);
  assert.deepEqual(disconnects, []);
  assert.equal(live.connected, true);
  const me = await h.whoami(live);
  assert.equal(me.id, cred.id);
  assert.deepEqual(me.rooms, [room]);
  assert.deepEqual(me.data, { live: true });
  assert.deepEqual(await h.ack(s, "room-members", cred.id), [cred.id]);
  const tag = h.uid("stillthere");
  const g = h.collectNumbered(live, tag);
  await h.ack(s, "emit-numbered", { to: room, count: 2, tag });
  await g.waitFor(2);
  assert.deepEqual(g.list.map((e) => e.i), [1, 2]);
  // the same over polling, and a second time
  const s2 = await h.recoverAs(srv.url, "/", { pid: cred.pid, offset: live._lastOffset, transports: ["polling"] });
  await assertNewSession(s2, cred, "pid of a live socket (polling)");
  assert.equal((await h.whoami(live)).id, cred.id);
  assert.deepEqual(disconnects, []);
});

h.tetherOnly(
  "one-shot: the same pid+offset presented twice -> only the first recovers",
  "a restored session is not consumed by the in-memory adapter",
  async () => {
    const cred = await droppedSession("/");
    const b = await h.connect(srv.url, "/", WS);
    const tag = h.uid("once");
    await h.ack(b, "emit-numbered", { to: cred.room, count: 2, tag });

    const first = await assertRestorable(cred, b, tag, 2);
    // second attempt while the first is connected
    const second = await h.recoverAs(srv.url, "/", { pid: cred.pid, offset: cred.offset, ...WS });
    const g2 = h.collectNumbered(second, tag);
    await assertNewSession(second, cred, "second attempt while recovered socket connected");
    await h.sleep(150);
    assert.equal(g2.list.length, 0, "nothing replayed to the second attempt");
    assert.deepEqual(await h.ack(b, "room-members", cred.id), [cred.id], "exactly one socket with that id");
    assert.equal((await h.whoami(first)).id, cred.id);

    // after an explicit disconnect of the recovered socket: still not restorable
    first.disconnect();
    await h.until(async () => (await h.ack(b, "room-members", cred.id)).length === 0, 2000, "first gone");
    const third = await h.recoverAs(srv.url, "/", { pid: cred.pid, offset: cred.offset, ...WS });
    await assertNewSession(third, cred, "attempt after the recovered socket disconnected explicitly");
  },
);

h.tetherOnly(
  "one-shot: two simultaneous attempts with the same pid -> exactly one recovers",
  "a restored session is not consumed by the in-memory adapter",
  async () => {
    const cred = await droppedSession("/");
    const attempts = await Promise.all(
      [0, 1, 2].map(() => h.recoverAs(srv.url, "/", { pid: cred.pid, offset: cred.offset, ...WS })),
    );
    const recovered = attempts.filter((s) => s.recovered);
    assert.equal(recovered.length, 1, `exactly one must recover, got ${recovered.length}`);
    assert.equal(recovered[0].id, cred.id);
    for (const s of attempts.filter((x) => !x.recovered)) await assertNewSession(s, cred, "loser");
    const b = await h.connect(srv.url, "/", WS);
    assert.deepEqual(await h.ack(b, "room-members", cred.id), [cred.id]);
  },
);

h.tetherOnly(
  "a failed attempt on the recovered socket's pid does not disturb it; later drops still recover",
  "a restored session is not consumed by the in-memory adapter",
  async () => {
    const cred = await droppedSession("/");
    const r = await h.recoverAs(srv.url, "/", { pid: cred.pid, offset: cred.offset, ...WS });
    assert.equal(r.recovered, true);
    const disconnects = [];
    r.on("disconnect", (x) => disconnects.push(x));
    const again = await h.recoverAs(srv.url, "/", { pid: cred.pid, offset: cred.offset, ...WS });
    await assertNewSession(again, cred, "pid of a recovered, live socket");
    await h.sleep(200);
    assert.deepEqual(disconnects, []);
    assert.equal((await h.whoami(r)).id, cred.id);
    // r drops again (recoverable): a fresh snapshot under the same pid
    await h.ack(r, "emit-to-self", "new offset");
    await h.until(() => r._lastOffset && r._lastOffset !== cred.offset, 2000, "new offset");
    const off2 = r._lastOffset;
    const d = h.onceEvent(r, "disconnect");
    r.emit("kill-transport");
    await d;
    const r2 = await h.recoverAs(srv.url, "/", { pid: cred.pid, offset: off2, ...WS });
    assert.equal(r2.recovered, true);
    assert.equal(r2.id, cred.id);
  },
);

h.tetherOnly(
  "pid and no offset, after a drop before any event: Tether recovers and replays everything addressed to the socket",
  "the reference requires an offset",
  async () => {
    const a = await h.connect(srv.url, "/", WS);
    const b = await h.connect(srv.url, "/", WS);
    const room = h.uid("nooff");
    await h.ack(a, "join", room);
    await h.ack(a, "set-data", { z: 1 });
    assert.equal(a._lastOffset, undefined, "no event received yet");
    const id = a.id;
    const base = h.uid("nooff");
    const got = h.collect(a, "numbered", (arg) => arg && arg.tag && arg.tag.startsWith(base));
    // events addressed to it while it is connected (it receives them live) would
    // set an offset, so the drop comes first
    const release = h.holdReconnect(a.io);
    const disc = h.onceEvent(a, "disconnect");
    a.emit("kill-transport");
    await disc;
    assert.equal(a._lastOffset, undefined);
    await h.ack(b, "emit-numbered", { to: room, count: 2, tag: `${base}-room` });
    await h.ack(b, "emit-numbered", { to: id, count: 1, tag: `${base}-id` });
    await h.ack(b, "emit-numbered", { count: 1, tag: `${base}-ns` });
    await h.ack(b, "emit-numbered", { to: h.uid("elsewhere"), count: 1, tag: `${base}-other` });
    const p = h.onceConnected(a);
    release(); // the client sends {pid} with no offset
    await p;
    assert.equal(a.recovered, true);
    assert.equal(a.id, id);
    const me = await h.whoami(a);
    assert.deepEqual(me.rooms, [room]);
    assert.deepEqual(me.data, { z: 1 });
    await h.sleep(300);
    assert.deepEqual(
      got.args.map(([arg]) => `${arg.tag.slice(base.length + 1)}${arg.i}`),
      ["room1", "room2", "id1", "ns1"],
    );
  },
);

test(
  "repeated failed attempts (unknown offsets) consume nothing",
  async () => {
    const cred = await droppedSession("/");
    for (let k = 0; k < 5; k++) {
      const s = await h.recoverAs(srv.url, "/", { pid: cred.pid, offset: `bogus-${k}`, ...WS });
      assert.ok(!s.recovered);
      s.disconnect();
    }
    const r = await h.recoverAs(srv.url, "/", { pid: cred.pid, offset: cred.offset, ...WS });
    assert.equal(r.recovered, true);
    assert.equal(r.id, cred.id);
  },
);
