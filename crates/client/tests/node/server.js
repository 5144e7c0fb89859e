#!/usr/bin/env node
// Socket.IO 4.8 server for the tether-client end-to-end tests (crates/client/tests/e2e.rs).
// Its Tether twin, servers/src/bin/client-test-server.rs, implements the same contract:
// every e2e test runs against both (node::* and tether::*), so change them together.
//
// Contract with the tests (any server command given in TETHER_SERVER_CMD must keep it):
//   - listens on 127.0.0.1:$PORT ($PORT=0: any free port) and prints one line
//     `listening <port>` on stdout once ready;
//   - PING_INTERVAL / PING_TIMEOUT (ms) set the heartbeat;
//   - connection state recovery on, skipping middlewares on recovery;
//   - namespaces "/" and "/admin" ("/admin" wants auth {token: "secret"}); on any namespace
//     auth {reject: "msg"} is refused with message "msg" and data {code: 401};
//   - TLS_CERT / TLS_KEY (paths of PEM files, Node server only): serve HTTPS with them
//     (https.createServer), for tests/tls.rs;
//   - COOKIE (Node server only): a sticky-session check, as a cookie-sticky load balancer
//     would do: the handshake response sets `COOKIE=<token>`, and every later request of
//     the session without that cookie is refused with 400;
//   - the events below.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

const PORT = Number(process.env.PORT || 0);
const PING_INTERVAL = Number(process.env.PING_INTERVAL || 1000);
const PING_TIMEOUT = Number(process.env.PING_TIMEOUT || 1000);

const fs = require("node:fs");
const https = require("node:https");
const httpServer = process.env.TLS_CERT
  ? https.createServer({
      cert: fs.readFileSync(process.env.TLS_CERT),
      key: fs.readFileSync(process.env.TLS_KEY),
    })
  : http.createServer();

// Shared by every socket: key -> list of values, key -> counter.
const logs = new Map();

// COOKIE: the tokens handed out; a request of a session must bring one back.
const COOKIE = process.env.COOKIE;
const cookieTokens = new Set();
function hasStickyCookie(req) {
  const header = req.headers.cookie || "";
  return header.split(";").some((c) => {
    const [k, v] = c.trim().split("=");
    return k === COOKIE && cookieTokens.has(v);
  });
}

const io = new Server(httpServer, {
  pingInterval: PING_INTERVAL,
  pingTimeout: PING_TIMEOUT,
  connectionStateRecovery: {
    maxDisconnectionDuration: 60 * 1000,
    skipMiddlewares: true,
  },
});

const counters = new Map();

function log(key, value) {
  if (!logs.has(key)) logs.set(key, []);
  logs.get(key).push(value);
}

// Splits a handler's arguments into (args, ack).
function withAck(args) {
  const last = args[args.length - 1];
  if (typeof last === "function") return [args.slice(0, -1), last];
  return [args, () => {}];
}

function setup(nsp) {
  nsp.use((socket, next) => {
    const auth = socket.handshake.auth || {};
    if (auth.reject) {
      const err = new Error(String(auth.reject));
      err.data = { code: 401 };
      return next(err);
    }
    if (nsp.name === "/admin" && auth.token !== "secret") {
      const err = new Error("unauthorized");
      err.data = { code: 401 };
      return next(err);
    }
    next();
  });

  nsp.on("connection", (socket) => {
    socket.on("disconnect", (reason) => {
      log("disconnects", { id: socket.id, nsp: nsp.name, reason });
    });

    // echo(...args[, ack]): acks the arguments back, or emits them back as "echo".
    socket.on("echo", (...all) => {
      const last = all[all.length - 1];
      if (typeof last === "function") last(...all.slice(0, -1));
      else socket.emit("echo", ...all);
    });

    // whoami(ack): what the server knows of this socket.
    socket.on("whoami", (ack) => {
      ack({
        id: socket.id,
        conn: socket.conn.id,
        nsp: nsp.name,
        transport: socket.conn.transport.name,
        recovered: socket.recovered,
        auth: socket.handshake.auth,
        query: socket.handshake.query,
        headers: socket.handshake.headers,
        rooms: [...socket.rooms],
      });
    });

    // ask(event, args, ack): emits `event` with `args` to this client, asking for an ack,
    // and acks with the client's answer (an array) or {error}.
    socket.on("ask", (event, args, ack) => {
      socket.timeout(2000).emit(event, ...args, (err, ...answer) => {
        ack(err ? { error: err.message } : answer);
      });
    });

    // emit-to-me(event, ...args[, ack]): a plain (recoverable) emit to this socket.
    socket.on("emit-to-me", (event, ...rest) => {
      const [args, ack] = withAck(rest);
      socket.emit(event, ...args);
      ack();
    });

    // volatile-to-me(event, ...args[, ack]): a volatile emit to this socket.
    socket.on("volatile-to-me", (event, ...rest) => {
      const [args, ack] = withAck(rest);
      socket.volatile.emit(event, ...args);
      ack();
    });

    // binary(ack): emits "binary" with a top-level and a nested buffer, then acks a buffer.
    socket.on("binary", (ack) => {
      socket.emit("binary", Buffer.from([1, 2, 3]), { nested: Buffer.from("hi") });
      ack(Buffer.from([0, 255]));
    });

    socket.on("join", (room, ...rest) => {
      const [, ack] = withAck(rest);
      socket.join(room);
      ack(true);
    });

    // numbered(room, from, count[, ack]): emits "numbered" from..from+count-1 to a room.
    socket.on("numbered", (room, from, count, ...rest) => {
      const [, ack] = withAck(rest);
      for (let i = from; i < from + count; i++) nsp.to(room).emit("numbered", i);
      ack();
    });

    // drop([ack]): acks, then closes the Engine.IO connection (recoverable).
    socket.on("drop", (...rest) => {
      const [, ack] = withAck(rest);
      ack();
      socket.conn.close();
    });

    // drop-then-emit(room, from, count): closes the connection, then emits "numbered"
    // from..from+count-1 to the room: the client misses them and must recover them.
    socket.on("drop-then-emit", (room, from, count) => {
      socket.conn.close();
      setTimeout(() => {
        for (let i = from; i < from + count; i++) nsp.to(room).emit("numbered", i);
      }, 50);
    });

    // server-disconnect(): the server disconnects this socket (not recoverable).
    socket.on("server-disconnect", () => {
      setTimeout(() => socket.disconnect(), 10);
    });

    socket.on("log", (key, value, ...rest) => {
      const [, ack] = withAck(rest);
      log(key, value);
      ack();
    });

    socket.on("get-log", (key, ack) => ack(logs.get(key) || []));

    // flaky(key, failures, ack): ignores the first `failures` calls, then acks the count.
    socket.on("flaky", (key, failures, ack) => {
      const n = (counters.get(key) || 0) + 1;
      counters.set(key, n);
      if (n > failures && typeof ack === "function") ack(n);
    });

    socket.on("count", (key, ack) => ack(counters.get(key) || 0));

    socket.on("never-ack", () => {});
  });
}

if (COOKIE) {
  // Every HTTP request and WebSocket upgrade of a session (those with a sid).
  io.engine.use((req, res, next) => {
    const sid = new URL(req.url, "http://x").searchParams.get("sid");
    if (sid && !hasStickyCookie(req)) {
      log("cookie-refused", req.url);
      return next(new Error("no sticky cookie"));
    }
    if (sid) log("cookies", req.headers.cookie);
    next();
  });
  io.engine.on("initial_headers", (headers) => {
    const token = Math.random().toString(36).slice(2);
    cookieTokens.add(token);
    headers["set-cookie"] = [`${COOKIE}=${token}; Path=/; HttpOnly`, "other=1; Path=/"];
  });
}

setup(io.of("/"));
setup(io.of("/admin"));

httpServer.listen(PORT, "127.0.0.1", () => {
  process.stdout.write(`listening ${httpServer.address().port}\n`);
});

// Exit with the test process.
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
