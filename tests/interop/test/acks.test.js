// Acks from the client to the server (the server emits with an ack, the official client
// answers), for one socket and for a room (broadcast with ack collecting every answer),
// with binary, over both transports. Uses two events beyond the contract: `ask-me` and
// `ask-room` (see servers/src/bin/conformance-server.rs).
"use strict";

const assert = require("node:assert/strict");
const h = require("../lib/harness");
const { test, describe } = h;

const srv = h.useServer();

for (const transport of ["websocket", "polling"]) {
  const opts = { transports: [transport], reconnection: false };

  describe(`server-to-client acks over ${transport}`, () => {
    h.tetherOnly("the client answers the server's emit, binary included", "events beyond the contract", async () => {
      const s = await h.connect(srv.url, "/", opts);
      s.on("question", (...args) => {
        const cb = args.pop();
        assert.equal(typeof cb, "function", "the server asked for an ack");
        cb("answer", ...args, Buffer.from([7, 8]));
      });
      const back = h.norm(await h.ackAll(s, "ask-me", { q: 1 }));
      assert.deepEqual(back.slice(0, 2), ["answer", { q: 1 }]);
      assert.deepEqual(back[2], Buffer.from([7, 8]));
    });

    h.tetherOnly("a client that never answers gives a timeout", "events beyond the contract", async () => {
      const s = await h.connect(srv.url, "/", opts);
      s.on("question", () => {});
      const [res] = await h.ackAll(s, "ask-me");
      assert.match(res.error, /timed out/);
    });

    h.tetherOnly("broadcast with ack collects every answer of the room", "events beyond the contract", async () => {
      const room = h.uid("ackroom");
      const a = await h.connect(srv.url, "/", opts);
      const b = await h.connect(srv.url, "/", opts);
      const c = await h.connect(srv.url, "/", opts);
      await h.ack(a, "join", room);
      await h.ack(b, "join", room);
      a.on("question", (x, cb) => cb("from-a", x));
      b.on("question", () => {}); // never answers
      c.on("question", (x, cb) => cb("c-is-not-in-the-room"));
      const [answers] = await h.ackAll(c, "ask-room", room);
      const byId = Object.fromEntries(answers.map((x) => [x.id, x]));
      assert.equal(answers.length, 2, "only the room's members are asked");
      assert.deepEqual(byId[a.id].answer, ["from-a", "room"]);
      assert.match(byId[b.id].error, /timed out/);
    });
  });
}
