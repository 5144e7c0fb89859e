// Process lifecycle (§1, §6.4 as it applies to a single node): SIGTERM closes
// every Engine.IO connection without a Socket.IO DISCONNECT packet (clients
// see a transport close and would reconnect), and the process exits in time.
"use strict";

const assert = require("node:assert/strict");
const h = require("../lib/harness");
const { test } = h;

test("SIGTERM: clients see a transport close (no DISCONNECT packet) and the process exits within 10 s", { timeout: 150000 }, async (t) => {
  if (process.env.SERVER_URL) return t.skip("SERVER_URL given: no process to stop");
  const server = await h.startServer();
  try {
    const ws = await h.connect(server.url, "/", { transports: ["websocket"], reconnection: false });
    const poll = await h.connect(server.url, "/custom", { transports: ["polling"], reconnection: false });
    assert.equal((await h.whoami(ws)).transport, "websocket");
    assert.equal((await h.whoami(poll)).transport, "polling");
    const d1 = h.onceEvent(ws, "disconnect", 10000);
    const d2 = h.onceEvent(poll, "disconnect", 10000);
    const stopped = server.stop(10000);
    const [[r1], [r2]] = await Promise.all([d1, d2]);
    assert.notEqual(r1, "io server disconnect", "websocket client got a DISCONNECT packet on shutdown");
    assert.notEqual(r2, "io server disconnect", "polling client got a DISCONNECT packet on shutdown");
    assert.match(r1, /^transport (close|error)$/);
    assert.match(r2, /^transport (close|error)$/);
    const exit = await stopped;
    assert.ok(exit.graceful, `the server did not exit within 10 s of SIGTERM (${exit.ms} ms)`);
  } finally {
    h.closeAllClients();
    await server.stop();
  }
});
