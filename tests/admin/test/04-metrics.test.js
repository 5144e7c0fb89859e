// /metrics (the server's own prometheus-client registry with Tether's metrics in it),
// scraped before and after a recovery: the counters move.
"use strict";

const { test, after } = require("node:test");
const assert = require("node:assert/strict");
const { io } = require("socket.io-client");
const { start, stop, next, clusterEnv, dropClusters } = require("../lib/server");

const servers = [];
const clients = [];
after(async () => {
  for (const c of clients) c.disconnect();
  for (const s of servers) await stop(s);
  dropClusters();
});

// The samples of an OpenMetrics text: "name{labels}" -> value.
async function scrape(url) {
  const res = await fetch(`${url}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /openmetrics-text/);
  const text = await res.text();
  assert.match(text, /# EOF\n$/);
  const samples = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    samples.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return samples;
}

test("/metrics: the counters move with a recovery", async () => {
  const srv = await start({});
  servers.push(srv);
  const before = await scrape(srv.url);
  assert.equal(before.get('tether_recovery_sessions_recovered_total{nsp="/"}'), 0);
  assert.equal(before.get('tether_recovery_sessions_kept_total{nsp="/"}'), 0);
  assert.equal(before.get("tether_connections"), 0);

  const c = io(srv.url, { forceNew: true, transports: ["websocket"], reconnectionDelay: 100, reconnectionDelayMax: 100 });
  clients.push(c);
  await next(c, "connect");
  assert.equal(await c.emitWithAck("echo", "x"), "x");
  const during = await scrape(srv.url);
  assert.equal(during.get("tether_connections"), 1);
  assert.equal(during.get('tether_sockets{nsp="/",transport="websocket"}'), 1);
  assert.equal(during.get('tether_connections_opened_total{transport="websocket"}'), 1);
  assert.ok(during.get("tether_events_received_total") >= 1);
  assert.ok(during.get("tether_messages_in_total") > before.get("tether_messages_in_total"));
  assert.ok(during.get("tether_message_bytes_in_total") > before.get("tether_message_bytes_in_total"));
  assert.ok(during.get("tether_packets_out_total") > before.get("tether_packets_out_total"));
  assert.ok(during.get("tether_bytes_out_total") > before.get("tether_bytes_out_total"));
  assert.equal(typeof during.get("tether_outbox_packets"), "number");
  assert.equal(typeof during.get("tether_outbox_bytes"), "number");

  c.io.engine.close(); // a network drop: the session is kept, then recovered
  await next(c, "connect");
  assert.equal(c.recovered, true);
  const afterRecovery = await scrape(srv.url);
  assert.equal(afterRecovery.get('tether_recovery_sessions_kept_total{nsp="/"}'), 1);
  assert.equal(afterRecovery.get('tether_recovery_sessions_recovered_total{nsp="/"}'), 1);
  assert.equal(afterRecovery.get('tether_recovery_failed_total{nsp="/",reason="unknown_session"}'), 0);
  assert.equal(afterRecovery.get('tether_connections_closed_total{reason="transport close"}'), 1);
  assert.equal(afterRecovery.get('tether_connections_opened_total{transport="websocket"}'), 2);
  assert.equal(afterRecovery.get('tether_sockets{nsp="/",transport="websocket"}'), 1);

  // A recovery with a pid nobody kept fails, by reason.
  const stranger = io(srv.url, { forceNew: true, transports: ["websocket"], reconnection: false, auth: { pid: "nobody", offset: "0" } });
  clients.push(stranger);
  await next(stranger, "connect");
  assert.equal(stranger.recovered, false);
  const failed = await scrape(srv.url);
  const reasons = [...failed.keys()].filter((k) => k.startsWith("tether_recovery_failed_total") && failed.get(k) > 0);
  assert.equal(reasons.length, 1, `one failure counted: ${reasons}`);
});

test("/metrics on a cluster node: delivery lag observed, no backend error", async () => {
  const srv = await start({ ...clusterEnv("metrics"), NODE_NAME: "node-m" });
  servers.push(srv);
  // The node's server_stats (every 300 ms) are cluster broadcasts: appended, read back.
  let m;
  for (let i = 0; i < 50; i++) {
    m = await scrape(srv.url);
    const lag = [...m.keys()].find((k) => k.startsWith("tether_cluster_lag_seconds_count{"));
    if (lag && m.get(lag) >= 2) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const count = [...m.keys()].find((k) => k.startsWith("tether_cluster_lag_seconds_count{"));
  assert.match(count, /node="node-m:/);
  assert.ok(m.get(count) >= 2, `lag observed: ${m.get(count)}`);
  const sum = m.get(count.replace("_count", "_sum"));
  assert.ok(sum / m.get(count) < 1, `mean lag under a second: ${sum / m.get(count)}`);
  for (const op of ["read", "append", "sessions"]) {
    const k = [...m.keys()].find((x) => x.startsWith("tether_cluster_backend_errors_total{") && x.includes(`op="${op}"`));
    assert.equal(m.get(k), 0, k);
  }
});
