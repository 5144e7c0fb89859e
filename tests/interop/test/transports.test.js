// §1: Engine.IO v4 transports: polling, websocket, polling -> websocket upgrade.
"use strict";

const assert = require("node:assert/strict");
const h = require("../lib/harness");
const { test } = h;

const srv = h.useServer();

test("handshake parameters over raw HTTP (pingInterval/pingTimeout >= 5000, maxPayload >= 1e6, websocket upgrade offered)", async () => {
  const res = await fetch(`${srv.url}/socket.io/?EIO=4&transport=polling`);
  assert.equal(res.status, 200);
  const body = await res.text();
  assert.equal(body[0], "0", `open packet expected, got ${body.slice(0, 80)}`);
  const open = JSON.parse(body.slice(1));
  assert.equal(typeof open.sid, "string");
  assert.ok(open.sid.length > 0);
  assert.ok(Array.isArray(open.upgrades) && open.upgrades.includes("websocket"), `upgrades: ${JSON.stringify(open.upgrades)}`);
  assert.ok(open.pingInterval >= 5000, `pingInterval ${open.pingInterval}`);
  assert.ok(open.pingTimeout >= 5000, `pingTimeout ${open.pingTimeout}`);
  assert.ok(open.maxPayload >= 1000000, `maxPayload ${open.maxPayload}`);
});

test("polling only", async () => {
  const s = await h.connect(srv.url, "/", { transports: ["polling"] });
  assert.equal(s.io.engine.transport.name, "polling");
  const me = await h.whoami(s);
  assert.equal(me.transport, "polling");
  assert.equal(me.id, s.id);
  assert.equal(me.nsp, "/");
  assert.deepEqual(await h.ackAll(s, "echo", "hello", 42), ["hello", 42]);
  // stays on polling
  await h.sleep(300);
  assert.equal(s.io.engine.transport.name, "polling");
});

test("websocket only", async () => {
  const s = await h.connect(srv.url, "/", { transports: ["websocket"] });
  assert.equal(s.io.engine.transport.name, "websocket");
  const me = await h.whoami(s);
  assert.equal(me.transport, "websocket");
  assert.equal(me.id, s.id);
  assert.deepEqual(await h.ackAll(s, "echo", "hello", { a: [1, 2] }), ["hello", { a: [1, 2] }]);
});

test("polling -> websocket upgrade", async () => {
  const s = h.makeSocket(srv.url, "/", { transports: ["polling", "websocket"], autoConnect: false });
  const upgraded = new Promise((resolve) => {
    s.io.on("open", () => s.io.engine.once("upgrade", (t) => resolve(t.name)));
  });
  const connected = h.onceConnected(s);
  s.connect();
  await connected;
  assert.equal(await h.withTimeout(upgraded, 5000, "upgrade"), "websocket");
  assert.equal(s.io.engine.transport.name, "websocket");
  const me = await h.whoami(s);
  assert.equal(me.transport, "websocket");
  assert.equal(me.id, s.id, "same socket id after the upgrade");
  // the session survived the upgrade: events flow both ways
  const tag = h.uid("up");
  const got = h.collectNumbered(s, tag);
  assert.deepEqual(await h.ack(s, "emit-numbered", { to: s.id, count: 3, tag }), { emitted: 3 });
  await got.waitFor(3);
  assert.deepEqual(got.list.map((e) => e.i), [1, 2, 3]);
});

test("messages sent during the upgrade are neither lost nor duplicated", async () => {
  const s = h.makeSocket(srv.url, "/", { transports: ["polling", "websocket"], autoConnect: false });
  const connected = h.onceConnected(s);
  s.connect();
  await connected;
  // fire a burst right away, while the upgrade is probably in progress
  const tag = h.uid("burst");
  const got = h.collectNumbered(s, tag);
  const acks = [];
  for (let k = 0; k < 20; k++) acks.push(h.ack(s, "echo", k));
  const emitted = h.ack(s, "emit-numbered", { to: s.id, count: 20, tag, intervalMs: 10 });
  assert.deepEqual(await Promise.all(acks), [...Array(20).keys()]);
  assert.deepEqual(await emitted, { emitted: 20 });
  await got.waitFor(20);
  await h.sleep(100);
  assert.deepEqual(got.list.map((e) => e.i), [...Array(20).keys()].map((k) => k + 1));
  await h.until(() => s.io.engine.transport.name === "websocket", 5000, "upgrade");
});

test("large (900 kB) message within maxPayload, over polling and websocket", async () => {
  const big = "x".repeat(900 * 1000);
  for (const transports of [["polling"], ["websocket"]]) {
    const s = await h.connect(srv.url, "/", { transports });
    const back = await h.ack(s, "echo", big, ack_timeout());
    assert.equal(typeof back, "string");
    assert.equal(back.length, big.length, `${transports}: length`);
    assert.ok(back === big, `${transports}: content`);
    s.disconnect();
  }
});

function ack_timeout() {
  return h.ack.timeout(10000);
}
