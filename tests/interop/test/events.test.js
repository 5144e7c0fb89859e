// §5 client-to-server events and §4.2 offsets, over websocket and polling.
"use strict";

const assert = require("node:assert/strict");
const h = require("../lib/harness");
const { test, describe } = h;

const srv = h.useServer();

const bin = (...bytes) => Buffer.from(bytes);

for (const transport of ["websocket", "polling"]) {
  const opts = { transports: [transport], reconnection: false };

  describe(`over ${transport}`, () => {
    test("echo with ack: exact arguments", async () => {
      const s = await h.connect(srv.url, "/", opts);
      const cases = [
        [],
        ["a"],
        [1, "two", true, null, 3.5],
        [{ a: { b: { c: [1, 2, { d: "e" }] } }, list: [] }],
        ["trailing string is not an offset here"],
        [[1, [2, [3]]], { "": "", "k y": "ü ☃ 😀" }],
      ];
      for (const args of cases) {
        assert.deepEqual(await h.ackAll(s, "echo", ...args), args);
      }
    });

    test("echo with ack: binary both directions", async () => {
      const s = await h.connect(srv.url, "/", opts);
      const b1 = bin(0, 1, 2, 255);
      const b2 = Buffer.alloc(0);
      const b3 = Buffer.from(Array.from({ length: 1000 }, (_, k) => k % 256));
      const args = [b1, { nested: { deep: [b2, "s", b3] }, n: 1 }, "tail"];
      const back = h.norm(await h.ackAll(s, "echo", ...args));
      assert.equal(back.length, 3);
      assert.ok(Buffer.isBuffer(back[0]), "binary comes back as binary");
      assert.deepEqual(back[0], b1);
      assert.deepEqual(back[1].nested.deep[0], b2);
      assert.deepEqual(back[1].nested.deep[2], b3);
      assert.equal(back[1].nested.deep[1], "s");
      assert.equal(back[1].n, 1);
      assert.equal(back[2], "tail");
      // an ack carries no offset: exactly the arguments
      assert.deepEqual(h.norm(await h.ackAll(s, "echo", b1)), [b1]);
    });

    test("echo without ack: emitted back with the same args plus an offset", async () => {
      const s = await h.connect(srv.url, "/", opts);
      const got = h.collect(s, "echo");
      const b = bin(9, 8, 7);
      s.emit("echo", "x", 1, { y: [true] });
      s.emit("echo");
      s.emit("echo", b, { deep: { b } });
      await got.waitFor(3);
      const [a1, a2, a3] = got.args.map(h.norm);
      assert.equal(a1.length, 4);
      assert.deepEqual(a1.slice(0, 3), ["x", 1, { y: [true] }]);
      h.assertOffset(a1[3]);
      assert.equal(a2.length, 1);
      h.assertOffset(a2[0]);
      assert.equal(a3.length, 3);
      assert.deepEqual(a3[0], b);
      assert.deepEqual(a3[1], { deep: { b } });
      h.assertOffset(a3[2]);
      const offsets = [a1[3], a2[0], a3[2]];
      assert.equal(new Set(offsets).size, 3, "offsets are unique");
      assert.equal(s._lastOffset, a3[2], "client tracked the last offset");
    });

    test("whoami on a fresh socket", async () => {
      const s = await h.connect(srv.url, "/custom", opts);
      const me = await h.whoami(s);
      assert.deepEqual(me, {
        id: s.id,
        nsp: "/custom",
        recovered: false,
        middlewareRan: true,
        rooms: [],
        data: {},
        transport,
      });
    });

    test("join / leave / room-members / set-data", async () => {
      const a = await h.connect(srv.url, "/", opts);
      const b = await h.connect(srv.url, "/", opts);
      const r = h.uid("r");
      const [r1, r2, r3] = [`${r}-b`, `${r}-a`, `${r}-c`];
      assert.deepEqual(await h.ack(a, "join", r1), [r1]);
      assert.deepEqual(await h.ack(a, "join", r2), [r2, r1].sort());
      assert.deepEqual(await h.ack(a, "join", r3), [r1, r2, r3].sort());
      assert.deepEqual(await h.ack(a, "join", r3), [r1, r2, r3].sort(), "joining twice is idempotent");
      assert.deepEqual(await h.ack(b, "join", r1), [r1]);
      assert.deepEqual(await h.ack(b, "room-members", r1), [a.id, b.id].sort());
      assert.deepEqual(await h.ack(b, "room-members", r2), [a.id]);
      assert.deepEqual(await h.ack(a, "leave", r2), [r1, r3].sort());
      assert.deepEqual(await h.ack(a, "leave", "never-joined"), [r1, r3].sort());
      assert.deepEqual(await h.ack(b, "room-members", r2), []);
      assert.deepEqual(await h.ack(b, "room-members", h.uid("empty")), []);
      // a socket id is a room with just that socket
      assert.deepEqual(await h.ack(b, "room-members", a.id), [a.id]);
      assert.deepEqual(await h.ack(a, "room-members", a.id), [a.id]);
      const me = await h.whoami(a);
      assert.deepEqual(me.rooms, [r1, r3].sort(), "whoami rooms are sorted, without the own id");
      // ascending order on mixed ASCII names
      const names = ["b", "A", "a", "_", "10", "9", "Z-", "Z"].map((x) => `${r}:${x}`);
      const c = await h.connect(srv.url, "/", opts);
      let last;
      for (const n of names) last = await h.ack(c, "join", n);
      const sorted = [...names].sort();
      assert.deepEqual(last, sorted);
      assert.deepEqual((await h.whoami(c)).rooms, sorted);
      assert.deepEqual(await h.ack(c, "leave", names[0]), sorted.filter((x) => x !== names[0]));

      assert.deepEqual(await h.ack(a, "set-data", { x: 1, y: "two" }), { x: 1, y: "two" });
      assert.deepEqual(await h.ack(a, "set-data", { y: { deep: [1] }, z: null }), { x: 1, y: { deep: [1] }, z: null });
      assert.deepEqual(await h.ack(a, "set-data", {}), { x: 1, y: { deep: [1] }, z: null });
      assert.deepEqual((await h.whoami(a)).data, { x: 1, y: { deep: [1] }, z: null });
      assert.deepEqual((await h.whoami(b)).data, {}, "data is per socket");

      // a socket that disconnects leaves its rooms
      const bid = b.id;
      b.disconnect();
      await h.until(async () => (await h.ack(a, "room-members", r1)).length === 1, 3000, "b gone from room");
      assert.deepEqual(await h.ack(a, "room-members", r1), [a.id]);
      assert.deepEqual(await h.ack(a, "room-members", bid), []);
    });

    test("emit-to-self: `self` (with offset) arrives before the ack", async () => {
      const s = await h.connect(srv.url, "/", opts);
      const order = [];
      s.on("self", (...args) => order.push(["self", ...args]));
      const payload = { hello: "world", n: [1, 2] };
      await new Promise((resolve, reject) => {
        s.timeout(5000).emit("emit-to-self", payload, (err, ...res) => {
          if (err) return reject(err);
          order.push(["ack", ...res]);
          resolve();
        });
      });
      assert.equal(order.length, 2, JSON.stringify(order));
      assert.equal(order[0][0], "self", "self must come before the ack");
      assert.deepEqual(order[0][1], payload);
      assert.equal(order[0].length, 3, "self carries payload + offset");
      h.assertOffset(order[0][2]);
      assert.deepEqual(order[1], ["ack"], "ack() has no arguments");

      // binary payload
      const got = h.collect(s, "self");
      const b = bin(1, 2, 3);
      await h.ack(s, "emit-to-self", { b });
      await got.waitFor(1);
      const a = h.norm(got.args[0]);
      assert.deepEqual(a[0], { b });
      h.assertOffset(a[1]);
    });

    test("emit-numbered to the namespace / a room / a socket id", async () => {
      const a = await h.connect(srv.url, "/", opts);
      const b = await h.connect(srv.url, "/", opts);
      const c = await h.connect(srv.url, "/", opts);
      const other = await h.connect(srv.url, "/custom", opts);
      const room = h.uid("room");
      await h.ack(a, "join", room);
      await h.ack(b, "join", room);

      const tagN = h.uid("nsp");
      const tagR = h.uid("room");
      const tagI = h.uid("id");
      const col = (tag) => [a, b, c, other].map((s) => h.collectNumbered(s, tag));
      const [gN, gR, gI] = [col(tagN), col(tagR), col(tagI)];

      assert.deepEqual(await h.ack(c, "emit-numbered", { count: 5, tag: tagN }), { emitted: 5 });
      assert.deepEqual(await h.ack(c, "emit-numbered", { to: room, count: 4, tag: tagR }), { emitted: 4 });
      assert.deepEqual(await h.ack(c, "emit-numbered", { to: b.id, count: 3, tag: tagI }), { emitted: 3 });

      await Promise.all([gN[0].waitFor(5), gN[1].waitFor(5), gN[2].waitFor(5), gR[0].waitFor(4), gR[1].waitFor(4), gI[1].waitFor(3)]);
      await h.sleep(150);
      const is = (g) => g.list.map((e) => e.i);
      for (let k = 0; k < 3; k++) assert.deepEqual(is(gN[k]), [1, 2, 3, 4, 5], "namespace broadcast, includes the sender");
      assert.deepEqual(is(gN[3]), [], "other namespace");
      assert.deepEqual(is(gR[0]), [1, 2, 3, 4]);
      assert.deepEqual(is(gR[1]), [1, 2, 3, 4]);
      assert.deepEqual(is(gR[2]), [], "sender not in the room");
      assert.deepEqual(is(gR[3]), []);
      assert.deepEqual(is(gI[0]), []);
      assert.deepEqual(is(gI[1]), [1, 2, 3]);
      assert.deepEqual(is(gI[2]), []);

      // payload shape and offsets
      const all = [];
      for (const g of [...gN, ...gR, ...gI]) {
        for (const e of g.list) {
          assert.equal(e.args.length, 2, "numbered carries {tag,i} + offset");
          assert.deepEqual(Object.keys(e.arg).sort(), ["i", "tag"]);
          h.assertOffset(e.offset);
          all.push(e);
        }
      }
      // one offset per emitted event, the same for every receiver
      const byOffset = new Map();
      for (const e of all) {
        const key = `${e.arg.tag}/${e.i}`;
        if (byOffset.has(e.offset)) assert.equal(byOffset.get(e.offset), key, "an offset names one event");
        byOffset.set(e.offset, key);
      }
      assert.equal(byOffset.size, 5 + 4 + 3, "offsets unique across events");
      const offA = gN[0].list.map((e) => e.offset);
      assert.deepEqual(gN[1].list.map((e) => e.offset), offA, "every receiver gets the same offsets");
    });

    test("emit-numbered volatile: no offset", async () => {
      const s = await h.connect(srv.url, "/", opts);
      const tag = h.uid("vol");
      const g = h.collectNumbered(s, tag);
      assert.deepEqual(await h.ack(s, "emit-numbered", { to: s.id, count: 3, tag, volatile: true }), { emitted: 3 });
      // volatile events may be dropped, but on a healthy connection they arrive
      await g.waitFor(3, 800).catch(() => {});
      assert.ok(g.list.length > 0, "no volatile event arrived at all");
      for (const e of g.list) {
        assert.equal(e.args.length, 1, `volatile event must carry no offset: ${JSON.stringify(e.args)}`);
        assert.deepEqual(e.arg, { tag, i: e.i });
      }
      const is = g.list.map((e) => e.i);
      assert.deepEqual(is, [...is].sort((x, y) => x - y), "in order");
    });

    test("emit-numbered binary: {tag, i, bin} with bin = [i, i+1, i+2] mod 256", async () => {
      const s = await h.connect(srv.url, "/", opts);
      const room = h.uid("binroom");
      await h.ack(s, "join", room);
      const tag = h.uid("bin");
      const g = h.collectNumbered(s, tag);
      assert.deepEqual(await h.ack(s, "emit-numbered", { to: room, count: 256, tag, binary: true }), { emitted: 256 });
      await g.waitFor(256);
      const list = g.list;
      assert.deepEqual(list.map((e) => e.i), Array.from({ length: 256 }, (_, k) => k + 1));
      for (const e of list) {
        const arg = h.norm(e.arg);
        assert.ok(Buffer.isBuffer(arg.bin), "bin is binary");
        assert.deepEqual(arg.bin, Buffer.from([e.i % 256, (e.i + 1) % 256, (e.i + 2) % 256]));
        assert.equal(arg.tag, tag);
        h.assertOffset(e.offset);
      }
      assert.equal(new Set(list.map((e) => e.offset)).size, 256);
      // binary + volatile: no offset
      const tagV = h.uid("binvol");
      const gv = h.collectNumbered(s, tagV);
      await h.ack(s, "emit-numbered", { count: 2, tag: tagV, binary: true, volatile: true });
      await gv.waitFor(1, 2000);
      for (const e of gv.list) assert.equal(e.args.length, 1, "binary volatile: no offset");
    });

    test("emit-numbered intervalMs: spaced out, first at once, ack after the last", async () => {
      const s = await h.connect(srv.url, "/", opts);
      const tag = h.uid("int");
      const g = h.collectNumbered(s, tag);
      const t0 = Date.now();
      const res = await h.ack(s, "emit-numbered", { to: s.id, count: 3, tag, intervalMs: 300 });
      const tAck = Date.now();
      assert.deepEqual(res, { emitted: 3 });
      const ts = (await g.waitFor(3)).map((x) => x.t);
      assert.deepEqual(g.list.map((e) => e.i), [1, 2, 3]);
      assert.ok(ts[0] - t0 < 200, `first emit should go out at once (${ts[0] - t0} ms)`);
      assert.ok(ts[1] - ts[0] >= 240, `spacing too short: ${ts[1] - ts[0]} ms`);
      assert.ok(ts[2] - ts[0] >= 2 * 300 - 60, `spacing too short: ${ts[2] - ts[0]} ms for 2 intervals`);
      assert.ok(tAck >= ts[2], "ack after the last event");
      assert.ok(tAck - t0 >= 2 * 300 - 60, `ack too early (${tAck - t0} ms)`);
    });

    test("server-disconnect: `io server disconnect`, other namespaces untouched, not recoverable", async () => {
      const manager = h.track(new h.Manager(srv.url, { transports: [transport], reconnectionDelay: 100, randomizationFactor: 0 }));
      const s = h.track(manager.socket("/"));
      const other = h.track(manager.socket("/custom"));
      await Promise.all([h.onceConnected(s), h.onceConnected(other)]);
      await h.ack(s, "join", "sd-room");
      await h.ack(s, "set-data", { k: 1 });
      await h.ack(s, "emit-to-self", "give me an offset");
      await h.until(() => s._lastOffset, 2000, "offset");
      const oldId = s.id;
      const oldPid = s._pid;
      const otherDisc = [];
      other.on("disconnect", (r) => otherDisc.push(r));
      const disc = h.onceEvent(s, "disconnect");
      s.emit("server-disconnect");
      const [reason] = await disc;
      assert.equal(reason, "io server disconnect");
      await h.sleep(400);
      assert.equal(s.connected, false, "no automatic reconnection after io server disconnect");
      assert.equal(other.connected, true, "namespace-level disconnect only");
      assert.deepEqual(otherDisc, []);
      assert.equal((await h.whoami(other)).id, other.id);

      // reconnect by hand: the client presents its old pid + offset
      assert.equal(s._pid, oldPid);
      const p = h.onceConnected(s);
      s.connect();
      await p;
      assert.ok(!s.recovered, "must not be recovered");
      assert.notEqual(s.id, oldId);
      assert.notEqual(s._pid, oldPid);
      const me = await h.whoami(s);
      assert.equal(me.recovered, false);
      assert.equal(me.middlewareRan, true);
      assert.deepEqual(me.rooms, []);
      assert.deepEqual(me.data, {});
    });
  });
}

test("offsets are unique across many events in a namespace", async () => {
  const s = await h.connect(srv.url, "/", { transports: ["websocket"] });
  const tag = h.uid("many");
  const g = h.collectNumbered(s, tag);
  await h.ack(s, "emit-numbered", { count: 300, tag });
  await h.ack(s, "emit-numbered", { to: s.id, count: 200, tag });
  await g.waitFor(500);
  const offs = g.list.map((e) => e.offset);
  offs.forEach((o) => h.assertOffset(o));
  assert.equal(new Set(offs).size, 500);
});
