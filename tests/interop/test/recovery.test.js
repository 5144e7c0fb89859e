// §4 connection state recovery: the standard paths (kill-transport, then the
// official client reconnects by itself and recovers).
"use strict";

const assert = require("node:assert/strict");
const h = require("../lib/harness");
const { test } = h;

const srv = h.useServer();

// Collect every `numbered` event whose tag starts with `base`, as "phase:i".
function seq(socket, base) {
  const c = h.collect(socket, "numbered", (arg) => arg && typeof arg.tag === "string" && arg.tag.startsWith(base + ":"));
  return {
    get keys() {
      return c.items.map(({ args }) => `${args[0].tag.slice(base.length + 1)}${args[0].i}`);
    },
    get items() {
      return c.items.map(({ args }) => ({
        key: `${args[0].tag.slice(base.length + 1)}${args[0].i}`,
        offset: args.length > 1 ? args[args.length - 1] : undefined,
        args,
      }));
    },
    waitFor: (n, ms) => c.waitFor(n, ms),
  };
}

// kill-transport, with the automatic reconnection held until release().
async function killHeld(socket) {
  const release = h.holdReconnect(socket.io);
  const disc = h.onceEvent(socket, "disconnect");
  socket.emit("kill-transport");
  const [reason] = await disc;
  return { reason, release };
}

async function releaseAndRecover(socket, release, ms = 5000) {
  const p = h.onceConnected(socket, ms, "reconnect");
  release();
  await p;
}

for (const transports of [["websocket"], ["polling"], ["polling", "websocket"]]) {
  const label = transports.join("+");
  test(`kill-transport then auto-reconnect recovers (${label})`, async () => {
    const a = await h.connect(srv.url, "/", { transports });
    const w = await h.connect(srv.url, "/", { transports: ["websocket"] }); // witness
    const b = await h.connect(srv.url, "/", { transports: ["websocket"] }); // emitter
    const room = h.uid("room");
    const room2 = h.uid("room2");
    const left = h.uid("left");
    await h.ack(a, "join", room);
    await h.ack(a, "join", room2);
    await h.ack(a, "join", left);
    await h.ack(a, "leave", left);
    await h.ack(a, "set-data", { user: "alice", n: 1, nested: { k: [1, 2] } });
    await h.ack(w, "join", room);
    await h.ack(w, "join", left);
    if (transports.length === 2) await h.until(() => a.io.engine.transport.name === "websocket", 5000, "upgrade");

    const base = h.uid("csr");
    const sa = seq(a, base);
    const sw = seq(w, base);
    await h.ack(b, "emit-numbered", { to: room, count: 2, tag: `${base}:pre` });
    await sa.waitFor(2);
    const idBefore = a.id;
    const pidBefore = a._pid;
    assert.equal(a._lastOffset, sa.items[1].offset, "client tracks the last offset");

    const { reason, release } = await killHeld(a);
    assert.match(reason, /^transport (close|error)$/);
    assert.equal(a.active, true, "the client will reconnect by itself");

    // §4.3: waiting for recovery = not connected, in no room, not in its own id room
    assert.deepEqual(await h.ack(b, "room-members", room), [w.id]);
    assert.deepEqual(await h.ack(b, "room-members", room2), []);
    assert.deepEqual(await h.ack(b, "room-members", idBefore), []);

    // missed events: room, own id, namespace, a room it had left, volatile
    await h.ack(b, "emit-numbered", { to: room, count: 3, tag: `${base}:room` });
    await h.ack(b, "emit-numbered", { to: idBefore, count: 2, tag: `${base}:id` });
    await h.ack(b, "emit-numbered", { to: left, count: 2, tag: `${base}:left` });
    await h.ack(b, "emit-numbered", { to: room, count: 2, tag: `${base}:vol`, volatile: true });
    await h.ack(b, "emit-numbered", { count: 2, tag: `${base}:ns` });
    await h.ack(b, "emit-numbered", { to: room2, count: 1, tag: `${base}:room2-` });

    await releaseAndRecover(a, release);
    assert.equal(a.recovered, true, "socket.recovered");
    assert.equal(a.id, idBefore, "same sid");
    assert.equal(a._pid, pidBefore, "same pid");

    const me = await h.whoami(a);
    assert.equal(me.id, idBefore);
    assert.equal(me.recovered, true);
    assert.equal(me.middlewareRan, false, "middleware skipped on recovery");
    assert.deepEqual(me.rooms, [room, room2].sort());
    assert.deepEqual(me.data, { user: "alice", n: 1, nested: { k: [1, 2] } });
    if (transports.length === 1) assert.equal(me.transport, transports[0]);
    else assert.ok(["polling", "websocket"].includes(me.transport), me.transport);
    assert.deepEqual(await h.ack(b, "room-members", room), [a.id, w.id].sort());
    assert.deepEqual(await h.ack(b, "room-members", idBefore), [idBefore]);

    await h.ack(b, "emit-numbered", { to: room, count: 2, tag: `${base}:post` });
    const expected = ["pre1", "pre2", "room1", "room2", "room3", "id1", "id2", "ns1", "ns2", "room2-1", "post1", "post2"];
    await sa.waitFor(expected.length);
    await h.sleep(200);
    assert.deepEqual(sa.keys, expected, "missed events exactly once, in order, before later ones; no left-room, no volatile");

    // original offsets: the witness got the room and namespace events live
    const offW = new Map(sw.items.map((e) => [e.key, e.offset]));
    for (const e of sa.items) {
      h.assertOffset(e.offset, e.key);
      if (offW.has(e.key)) assert.equal(e.offset, offW.get(e.key), `offset of ${e.key} differs from the live one`);
    }
    assert.equal(new Set(sa.items.map((e) => e.offset)).size, expected.length, "offsets unique");
    assert.equal(a._lastOffset, sa.items[sa.items.length - 1].offset);
  });
}

test("recovery on /custom and /short (within the window), multiplexed, one kill for all", async () => {
  const manager = h.track(new h.Manager(srv.url, { transports: ["websocket"], reconnectionDelay: 100, randomizationFactor: 0 }));
  const nsps = ["/", "/custom", "/short"];
  const socks = nsps.map((n) => h.track(manager.socket(n)));
  await Promise.all(socks.map((s) => h.onceConnected(s)));
  const base = h.uid("mx");
  const emitters = await Promise.all(nsps.map((n) => h.connect(srv.url, n, { transports: ["websocket"] })));
  const seqs = socks.map((s) => seq(s, base));
  for (let k = 0; k < 3; k++) {
    await h.ack(socks[k], "join", "mx-room");
    await h.ack(socks[k], "set-data", { nsp: nsps[k] });
    await h.ack(emitters[k], "emit-numbered", { to: socks[k].id, count: 1, tag: `${base}:pre` });
    await seqs[k].waitFor(1);
  }
  const ids = socks.map((s) => s.id);
  const release = h.holdReconnect(manager);
  const discs = socks.map((s) => h.onceEvent(s, "disconnect"));
  socks[1].emit("kill-transport");
  await Promise.all(discs);
  for (let k = 0; k < 3; k++) {
    await h.ack(emitters[k], "emit-numbered", { to: "mx-room", count: 2, tag: `${base}:miss` });
  }
  const back = socks.map((s) => h.onceConnected(s));
  release();
  await Promise.all(back);
  for (let k = 0; k < 3; k++) {
    assert.equal(socks[k].recovered, true, `${nsps[k]} recovered`);
    assert.equal(socks[k].id, ids[k]);
    const me = await h.whoami(socks[k]);
    assert.deepEqual(me.rooms, ["mx-room"]);
    assert.deepEqual(me.data, { nsp: nsps[k] });
    assert.equal(me.middlewareRan, false);
    await seqs[k].waitFor(3);
  }
  await h.sleep(150);
  for (let k = 0; k < 3; k++) assert.deepEqual(seqs[k].keys, ["pre1", "miss1", "miss2"], nsps[k]);
});

test("recovery repeats: a recovered socket that drops again recovers again (fresh snapshot, same pid)", async () => {
  const a = await h.connect(srv.url, "/", { transports: ["websocket"] });
  const b = await h.connect(srv.url, "/", { transports: ["websocket"] });
  const room = h.uid("rep");
  await h.ack(a, "join", room);
  const base = h.uid("rep");
  const sa = seq(a, base);
  await h.ack(b, "emit-numbered", { to: room, count: 1, tag: `${base}:p` });
  await sa.waitFor(1);
  const id = a.id;
  const pid = a._pid;
  for (let round = 1; round <= 3; round++) {
    const { release } = await killHeld(a);
    await h.ack(b, "emit-numbered", { to: room, count: 2, tag: `${base}:r${round}-` });
    await releaseAndRecover(a, release);
    assert.equal(a.recovered, true, `round ${round}`);
    assert.equal(a.id, id);
    assert.equal(a._pid, pid);
    // change state between drops: the new snapshot must reflect it
    await h.ack(a, "set-data", { round });
    await h.ack(a, "join", `${room}-${round}`);
  }
  const me = await h.whoami(a);
  assert.deepEqual(me.data, { round: 3 });
  assert.deepEqual(me.rooms, [room, `${room}-1`, `${room}-2`, `${room}-3`].sort());
  await h.sleep(150);
  assert.deepEqual(sa.keys, ["p1", "r1-1", "r1-2", "r2-1", "r2-2", "r3-1", "r3-2"]);
});

test("from replay to live: events keep flowing during the outage and the restore, each exactly once", async () => {
  const a = await h.connect(srv.url, "/", { transports: ["websocket"] });
  const b = await h.connect(srv.url, "/", { transports: ["websocket"] });
  const room = h.uid("flow");
  await h.ack(a, "join", room);
  const base = h.uid("flow");
  const sa = seq(a, base);
  const N = 60;
  const done = h.ack(b, "emit-numbered", { to: room, count: N, tag: `${base}:e`, intervalMs: 15 }, h.ack.timeout(10000));
  await sa.waitFor(8);
  const { release } = await killHeld(a);
  await h.sleep(200);
  await releaseAndRecover(a, release);
  assert.equal(a.recovered, true);
  assert.deepEqual(await done, { emitted: N });
  await sa.waitFor(N);
  await h.sleep(150);
  assert.deepEqual(sa.keys, Array.from({ length: N }, (_, k) => `e${k + 1}`));
});

test("/short: recovery window (2 s) expired -> new session", async () => {
  const a = await h.connect(srv.url, "/short", { transports: ["websocket"], reconnection: false });
  const b = await h.connect(srv.url, "/short", { transports: ["websocket"] });
  const room = h.uid("short");
  await h.ack(a, "join", room);
  await h.ack(a, "set-data", { k: 1 });
  await h.ack(a, "emit-to-self", "offset please");
  await h.until(() => a._lastOffset, 2000, "offset");
  const id = a.id;
  const pid = a._pid;
  const disc = h.onceEvent(a, "disconnect");
  a.emit("kill-transport");
  await disc;
  const tag = h.uid("late");
  const g = h.collectNumbered(a, tag);
  await h.ack(b, "emit-numbered", { to: room, count: 2, tag });
  await h.sleep(2700);
  const p = h.onceConnected(a);
  a.connect(); // presents pid + offset
  await p;
  assert.ok(!a.recovered, "window expired: must not recover");
  assert.notEqual(a.id, id);
  assert.notEqual(a._pid, pid);
  const me = await h.whoami(a);
  assert.equal(me.recovered, false);
  assert.equal(me.middlewareRan, true);
  assert.deepEqual(me.rooms, []);
  assert.deepEqual(me.data, {});
  await h.sleep(200);
  assert.equal(g.list.length, 0, "nothing replayed");
});

test("/short: within the window (1.5 s of 2 s) -> recovered", async () => {
  const a = await h.connect(srv.url, "/short", { transports: ["websocket"], reconnection: false });
  await h.ack(a, "emit-to-self", "offset please");
  await h.until(() => a._lastOffset, 2000, "offset");
  const id = a.id;
  const disc = h.onceEvent(a, "disconnect");
  a.emit("kill-transport");
  await disc;
  await h.sleep(1500);
  const p = h.onceConnected(a);
  a.connect();
  await p;
  assert.equal(a.recovered, true);
  assert.equal(a.id, id);
});

test("client socket.disconnect() then manual reconnect with the pid -> not recovered", async () => {
  const a = await h.connect(srv.url, "/", { transports: ["websocket"] });
  const b = await h.connect(srv.url, "/", { transports: ["websocket"] });
  await h.ack(a, "join", "cd-room");
  await h.ack(a, "set-data", { k: 1 });
  await h.ack(a, "emit-to-self", "x");
  await h.until(() => a._lastOffset, 2000, "offset");
  const id = a.id;
  const pid = a._pid;
  a.disconnect();
  await h.until(async () => (await h.ack(b, "room-members", id)).length === 0, 2000, "a gone");
  const tag = h.uid("cd");
  const g = h.collectNumbered(a, tag);
  await h.ack(b, "emit-numbered", { to: id, count: 2, tag });
  // the official client keeps _pid/_lastOffset and presents them again
  assert.equal(a._pid, pid);
  const p = h.onceConnected(a);
  a.connect();
  await p;
  assert.ok(!a.recovered);
  assert.notEqual(a.id, id);
  const me = await h.whoami(a);
  assert.equal(me.recovered, false);
  assert.equal(me.middlewareRan, true);
  assert.deepEqual(me.rooms, []);
  assert.deepEqual(me.data, {});
  await h.sleep(200);
  assert.equal(g.list.length, 0, "nothing replayed");
});

test("the middleware is skipped on a successful recovery, even with deny:true in auth", async () => {
  const a = await h.connect(srv.url, "/custom", { transports: ["websocket"], reconnection: false });
  await h.ack(a, "emit-to-self", "x");
  await h.until(() => a._lastOffset, 2000, "offset");
  const id = a.id;
  const disc = h.onceEvent(a, "disconnect");
  a.emit("kill-transport");
  await disc;
  // an unknown pid with deny:true is a normal CONNECT: the middleware runs and denies
  const err = await h.connectError(srv.url, "/custom", { auth: { pid: "nope-" + a._pid, offset: a._lastOffset, deny: true } });
  assert.equal(err.message, "denied");
  const r = await h.recoverAs(srv.url, "/custom", { pid: a._pid, offset: a._lastOffset, auth: { deny: true }, transports: ["websocket"] });
  assert.equal(r.recovered, true);
  assert.equal(r.id, id);
  const me = await h.whoami(r);
  assert.equal(me.middlewareRan, false);
  assert.equal(me.recovered, true);
});

test("recovery after a proxy cut (RST, no close frame)", async () => {
  const proxy = await new h.TcpProxy(srv.port).listen();
  try {
    const a = await h.connect(proxy.url, "/", { transports: ["websocket"] });
    const b = await h.connect(srv.url, "/", { transports: ["websocket"] });
    const room = h.uid("cut");
    await h.ack(a, "join", room);
    const base = h.uid("cut");
    const sa = seq(a, base);
    await h.ack(b, "emit-numbered", { to: room, count: 1, tag: `${base}:a` });
    await sa.waitFor(1);
    const id = a.id;
    const release = h.holdReconnect(a.io);
    const disc = h.onceEvent(a, "disconnect");
    proxy.cutAll();
    const [reason] = await disc;
    assert.match(reason, /^transport (close|error)$/);
    // the server notices the RST; once it does, a is no longer listed
    await h.until(async () => (await h.ack(b, "room-members", id)).length === 0, 3000, "server noticed the cut");
    await h.ack(b, "emit-numbered", { to: room, count: 3, tag: `${base}:b` });
    await releaseAndRecover(a, release);
    assert.equal(a.recovered, true);
    assert.equal(a.id, id);
    await sa.waitFor(4);
    await h.sleep(150);
    assert.deepEqual(sa.keys, ["a1", "b1", "b2", "b3"]);
  } finally {
    await proxy.close();
  }
});

for (const transports of [["websocket"], ["polling"]]) {
  test(`bulk replay with binary events: 300 plain + 100 binary missed events (${transports})`, async () => {
    const a = await h.connect(srv.url, "/", { transports });
    const b = await h.connect(srv.url, "/", { transports: ["websocket"] });
    const room = h.uid("bulk");
    await h.ack(a, "join", room);
    const base = h.uid("bulk");
    const sa = seq(a, base);
    await h.ack(b, "emit-numbered", { to: room, count: 1, tag: `${base}:pre`, binary: true });
    await sa.waitFor(1);
    const { release } = await killHeld(a);
    await h.ack(b, "emit-numbered", { to: room, count: 300, tag: `${base}:p` });
    await h.ack(b, "emit-numbered", { to: room, count: 100, tag: `${base}:b`, binary: true });
    await h.ack(b, "emit-numbered", { to: room, count: 50, tag: `${base}:v`, volatile: true, binary: true });
    await releaseAndRecover(a, release);
    assert.equal(a.recovered, true);
    await h.ack(b, "emit-numbered", { to: room, count: 3, tag: `${base}:post`, binary: true });
    await sa.waitFor(1 + 300 + 100 + 3, 10000);
    await h.sleep(200);
    const expected = [
      "pre1",
      ...Array.from({ length: 300 }, (_, k) => `p${k + 1}`),
      ...Array.from({ length: 100 }, (_, k) => `b${k + 1}`),
      "post1",
      "post2",
      "post3",
    ];
    assert.deepEqual(sa.keys, expected);
    for (const e of sa.items) {
      h.assertOffset(e.offset, e.key);
      const arg = h.norm(e.args[0]);
      if (e.key[0] === "b" || e.key.startsWith("pre") || e.key.startsWith("post")) {
        assert.ok(Buffer.isBuffer(arg.bin), `${e.key}: bin must be binary after replay`);
        assert.deepEqual(arg.bin, Buffer.from([arg.i % 256, (arg.i + 1) % 256, (arg.i + 2) % 256]), e.key);
      } else {
        assert.equal(arg.bin, undefined);
      }
    }
    assert.equal(new Set(sa.items.map((e) => e.offset)).size, expected.length);
  });
}

test("the offset may come from any stored event: echo without ack, namespace broadcast", async () => {
  for (const how of ["echo", "broadcast"]) {
    const a = await h.connect(srv.url, "/", { transports: ["websocket"] });
    const b = await h.connect(srv.url, "/", { transports: ["websocket"] });
    const room = h.uid("src");
    await h.ack(a, "join", room);
    const base = h.uid("src");
    const sa = seq(a, base);
    if (how === "echo") {
      const got = h.collect(a, "echo");
      a.emit("echo", { k: 1 }, "a string arg");
      await got.waitFor(1);
      assert.equal(a._lastOffset, got.args[0][2]);
    } else {
      await h.ack(b, "emit-numbered", { count: 1, tag: `${base}:ns` });
      await sa.waitFor(1);
      assert.equal(a._lastOffset, sa.items[0].offset);
    }
    const { release } = await killHeld(a);
    await h.ack(b, "emit-numbered", { to: room, count: 2, tag: `${base}:m` });
    await releaseAndRecover(a, release);
    assert.equal(a.recovered, true, how);
    await sa.waitFor(how === "echo" ? 2 : 3);
    await h.sleep(100);
    assert.deepEqual(sa.keys, how === "echo" ? ["m1", "m2"] : ["ns1", "m1", "m2"], how);
    a.disconnect();
    b.disconnect();
  }
});
