// A TCP proxy in front of Redis, run in the test process (CONTRACT.md §6.1:
// the ADAPTER URL points to a proxy that the harness runs in front of the
// engine). `outage(ms)` cuts every open connection and refuses new ones
// for `ms`, which is how the engine outage of §6.5 is simulated: the engine
// keeps its data, the nodes lose their connections. (Sockets are closed with
// destroy(), a FIN: resetAndDestroy() can leave a handle that keeps Node 20's
// exit cleanup spinning forever.)
"use strict";

const net = require("node:net");

class TcpProxy {
  constructor({ targetHost = "127.0.0.1", targetPort = 6379 } = {}) {
    this.targetHost = targetHost;
    this.targetPort = targetPort;
    this.pairs = new Set();
    this.refusing = false;
    this.dropReplies = false;
    this.replyDelay = 0;
    this.accepted = 0;
    this.refused = 0;
    this.server = net.createServer((client) => this.#onConnection(client));
  }

  listen(port = 0) {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, "127.0.0.1", () => {
        this.port = this.server.address().port;
        resolve(this.port);
      });
    });
  }

  #onConnection(client) {
    if (this.refusing) {
      this.refused++;
      client.on("error", () => {});
      client.destroy();
      return;
    }
    this.accepted++;
    const upstream = net.connect({ host: this.targetHost, port: this.targetPort });
    const pair = { client, upstream };
    this.pairs.add(pair);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const close = () => {
      if (!this.pairs.delete(pair)) return;
      client.destroy();
      upstream.destroy();
    };
    client.on("error", close);
    upstream.on("error", close);
    client.on("close", close);
    upstream.on("close", close);
    client.on("data", (d) => upstream.write(d));
    // Replies are dropped while `dropReplies` is set (requests still go
    // through), and held for `replyDelay` ms (in order) while it is set.
    const queue = [];
    let timer = null;
    const pump = () => {
      timer = null;
      const now = Date.now();
      while (queue.length && queue[0].due <= now) client.write(queue.shift().d);
      if (queue.length) timer = setTimeout(pump, queue[0].due - now);
    };
    upstream.on("data", (d) => {
      if (this.dropReplies) return;
      if (!this.replyDelay && !queue.length) {
        client.write(d);
        return;
      }
      queue.push({ d, due: Date.now() + this.replyDelay });
      if (!timer) pump();
    });
  }

  // Cuts every connection, both ways.
  cutAll() {
    for (const pair of [...this.pairs]) {
      this.pairs.delete(pair);
      for (const s of [pair.client, pair.upstream]) {
        s.on("error", () => {});
        s.destroy();
      }
    }
  }

  // Engine outage: cut everything now, refuse new connections for `ms`.
  async outage(ms) {
    this.refusing = true;
    this.cutAll();
    await new Promise((r) => setTimeout(r, ms));
    this.refusing = false;
  }

  // A partition that loses the replies: requests still reach Redis (and are
  // applied), replies are dropped for `ms`; then every connection is cut and
  // new ones are refused for `refuseMs`.
  async loseReplies(ms, refuseMs = 1000) {
    this.dropReplies = true;
    await new Promise((r) => setTimeout(r, ms));
    this.refusing = true;
    this.cutAll();
    this.dropReplies = false;
    await new Promise((r) => setTimeout(r, refuseMs));
    this.refusing = false;
  }

  connectionCount() {
    return this.pairs.size;
  }

  close() {
    this.cutAll();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// Several proxies (one per node) driven as one: an engine outage cuts them all.
class ProxyGroup {
  constructor(proxies) {
    this.proxies = proxies;
  }

  outage(ms) {
    return Promise.all(this.proxies.map((p) => p.outage(ms)));
  }

  loseReplies(ms, refuseMs) {
    return Promise.all(this.proxies.map((p) => p.loseReplies(ms, refuseMs)));
  }

  cutAll() {
    for (const p of this.proxies) p.cutAll();
  }
}

module.exports = { TcpProxy, ProxyGroup };
