// Bad input over raw HTTP long-polling and raw WebSocket. The server must
// answer the standard Engine.IO errors, never crash, and keep serving: both a
// fresh client and clients connected beforehand, which must not be disturbed.
// Also checks the raw wire format of §4.1/§4.2 (CONNECT reply, offsets, acks).
"use strict";

const { after } = require("node:test");
const assert = require("node:assert/strict");
const WebSocket = require("ws");
const h = require("../lib/harness");
const { test, tetherOnly } = h;

// Clients connected before any bad input; not tracked by the per-test cleanup.
const sentinels = [];
const srv = h.useServer({ onStart: connectSentinels });

async function connectSentinels() {
  for (const transports of [["websocket"], ["polling"]]) {
    const s = h.io(srv.url, { forceNew: true, transports, reconnection: false });
    await h.onceConnected(s);
    await h.ack(s, "join", "sentinel-room");
    const rec = { s, id: s.id, disconnects: [] };
    s.on("disconnect", (r) => rec.disconnects.push(r));
    sentinels.push(rec);
  }
}
after(() => sentinels.forEach(({ s }) => s.disconnect()));

async function assertHealthy(label) {
  for (const { s, id, disconnects } of sentinels) {
    assert.deepEqual(disconnects, [], `${label}: a client connected beforehand was disconnected`);
    assert.equal(s.connected, true, `${label}: sentinel connected`);
    const me = await h.whoami(s);
    assert.equal(me.id, id, `${label}: sentinel keeps its id`);
    assert.deepEqual(me.rooms, ["sentinel-room"]);
  }
  const fresh = await h.connect(srv.url, "/", { transports: ["websocket"], reconnection: false });
  assert.deepEqual(await h.ackAll(fresh, "echo", label), [label], `${label}: a fresh client is served`);
  fresh.disconnect();
}

const EIO = (q = "") => `${srv.url}/socket.io/?EIO=4&transport=polling${q}`;

async function handshake() {
  const res = await fetch(EIO());
  assert.equal(res.status, 200);
  const body = await res.text();
  assert.equal(body[0], "0");
  return JSON.parse(body.slice(1)).sid;
}

async function post(sid, body, extra = {}) {
  return fetch(EIO(`&sid=${encodeURIComponent(sid)}`), {
    method: "POST",
    body,
    headers: { "content-type": "text/plain;charset=UTF-8" },
    ...extra,
  });
}

// GET on a session: {status, body} or {pending:true} if it did not answer.
async function poll(sid, ms = 1500) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), ms);
  try {
    const res = await fetch(EIO(`&sid=${encodeURIComponent(sid)}`), { signal: ctl.signal });
    return { status: res.status, body: await res.text() };
  } catch (e) {
    if (e.name === "AbortError") return { pending: true };
    return { error: e };
  } finally {
    clearTimeout(timer);
  }
}

// Is the polling session gone (400 unknown sid, or a close packet)?
async function sessionClosed(sid) {
  for (let k = 0; k < 3; k++) {
    const r = await poll(sid, 1500);
    if (r.error) return true;
    if (r.pending) return false;
    if (r.status === 400) return true;
    if (r.status === 200 && r.body.split("\x1e").includes("1")) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------
// raw WebSocket client

class RawWs {
  constructor(q = "") {
    this.url = `${srv.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket${q}`;
    this.msgs = [];
    this.waiters = [];
    this.closed = false;
    this.ws = new WebSocket(this.url);
    this.ws.on("message", (data, isBinary) => {
      const m = isBinary ? Buffer.from(data) : data.toString();
      if (m === "2") {
        this.ws.send("3");
        return;
      }
      this.msgs.push(m);
      this._wake();
    });
    this.ws.on("close", () => {
      this.closed = true;
      this._wake();
    });
    this.ws.on("error", (e) => {
      this.error = e;
      this.closed = true;
      this._wake();
    });
    this.ws.on("unexpected-response", (req, res) => {
      this.httpStatus = res.statusCode;
      this.closed = true;
      req.destroy();
      this._wake();
    });
  }
  _wake() {
    for (const w of [...this.waiters]) w();
  }
  // next message matching pred, or null if closed/timeout
  next(pred = () => true, ms = 3000) {
    return new Promise((resolve) => {
      const check = () => {
        const k = this.msgs.findIndex(pred);
        if (k >= 0) {
          const [m] = this.msgs.splice(k, 1);
          done(m);
        } else if (this.closed) done(null);
      };
      const timer = setTimeout(() => done(null), ms);
      const done = (v) => {
        clearTimeout(timer);
        const i = this.waiters.indexOf(check);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(v);
      };
      this.waiters.push(check);
      check();
    });
  }
  send(m) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(m);
  }
  async open() {
    const m = await this.next((x) => typeof x === "string" && x[0] === "0");
    assert.ok(m, `no Engine.IO open packet (status ${this.httpStatus}, ${this.error})`);
    this.handshake = JSON.parse(m.slice(1));
    return this;
  }
  async connectNsp(nsp = "/") {
    const prefix = nsp === "/" ? "40" : `40${nsp},`;
    this.send(prefix);
    const m = await this.next((x) => typeof x === "string" && x.startsWith(prefix));
    assert.ok(m, `no CONNECT reply for ${nsp}`);
    return JSON.parse(m.slice(prefix.length));
  }
  waitClosed(ms) {
    return new Promise((resolve) => {
      if (this.closed) return resolve(true);
      const timer = setTimeout(() => resolve(false), ms);
      this.ws.once("close", () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }
  close() {
    try {
      this.ws.terminate();
    } catch {}
  }
}

const rawSockets = new Set();
async function rawWs(q) {
  const r = new RawWs(q);
  rawSockets.add(r);
  return r;
}
after(() => rawSockets.forEach((r) => r.close()));

// ---------------------------------------------------------------------------
// HTTP errors

test("unknown sid -> HTTP 400 {code:1, message:'Session ID unknown'} (GET and POST)", async () => {
  for (const method of ["GET", "POST"]) {
    const res = await fetch(EIO("&sid=does-not-exist"), { method, body: method === "POST" ? "40" : undefined });
    assert.equal(res.status, 400, method);
    assert.deepEqual(await res.json(), { code: 1, message: "Session ID unknown" }, method);
  }
});

test("unknown transport -> HTTP 400 {code:0}", async () => {
  const res = await fetch(`${srv.url}/socket.io/?EIO=4&transport=carrier-pigeon`);
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.equal(body.code, 0, JSON.stringify(body));
  assert.equal(typeof body.message, "string");
});

test("EIO=3 -> HTTP 400 {code:5}", async () => {
  const res = await fetch(`${srv.url}/socket.io/?EIO=3&transport=polling`);
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.equal(body.code, 5, JSON.stringify(body));
  assert.equal(typeof body.message, "string");
});

// A raw HTTP/1.1 request over `net`, so that an early answer (a 413 sent
// before the body is read, then the connection closed) is still seen: fetch()
// fails with EPIPE in that case. Resolves {status, head} or {error}.
function rawHttp(method, path, body) {
  return new Promise((resolve) => {
    const net = require("node:net");
    const sock = net.connect({ host: h.HOST, port: srv.port });
    let data = "";
    let settled = false;
    const done = (v) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(parse() || { error: "timeout" }), 10000);
    const parse = () => {
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(data);
      return m ? { status: Number(m[1]), head: data.slice(0, 300) } : null;
    };
    sock.on("data", (d) => {
      data += d.toString("latin1");
      if (data.includes("\r\n\r\n")) done(parse());
    });
    sock.on("error", (e) => done(parse() || { error: e.code || String(e) }));
    sock.on("close", () => done(parse() || { error: "closed without a response" }));
    sock.on("connect", () => {
      sock.write(
        `${method} ${path} HTTP/1.1\r\nHost: ${h.HOST}:${srv.port}\r\n` +
          `Content-Type: text/plain;charset=UTF-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n`,
      );
      sock.write(body, () => {});
    });
  });
}

test("a 2 MB polling POST -> HTTP 413 or the session is closed", async () => {
  const sid = await handshake();
  const res = await rawHttp("POST", `/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`, "4" + "x".repeat(2 * 1024 * 1024));
  const status = res.status;
  assert.ok(
    status === 413 || (await sessionClosed(sid)),
    `answer ${JSON.stringify(res)} and the session is still open`,
  );
  if (status !== undefined) assert.ok([413, 200, 400].includes(status), `unexpected status ${status}`);
  await assertHealthy("2 MB POST");
});

test("garbage polling POST bodies: no crash, the server keeps serving", async () => {
  const bodies = [
    "garbage",
    "9",
    "",
    "\x1e\x1e\x1e",
    "4\x1e",
    "42[bad json",
    "40{not json",
    "4" + "[".repeat(5000),
    "b%%%not base64%%%",
    "b" + Buffer.from("hello").toString("base64") + "\x1e40",
    "2", // ping from the client is the wrong direction in EIO4
    "5",
  ];
  for (const body of bodies) {
    const sid = await handshake();
    const res = await post(sid, body);
    assert.ok([200, 400].includes(res.status), `POST ${JSON.stringify(body.slice(0, 20))}: status ${res.status}`);
    await res.arrayBuffer().catch(() => {});
  }
  // socket.io-level garbage after a valid CONNECT over polling
  for (const body of ['42[bad json', '49[]', '42"nope"', '42[]', '451000000000-["echo",{"_placeholder":true,"num":0}]']) {
    const sid = await handshake();
    const r1 = await post(sid, "40");
    assert.equal(r1.status, 200);
    await r1.arrayBuffer();
    const r = await poll(sid);
    assert.ok(r.status === 200 && r.body.startsWith("40{"), `CONNECT reply over polling: ${JSON.stringify(r)}`);
    const res = await post(sid, body);
    assert.ok([200, 400].includes(res.status), `POST ${body.slice(0, 20)}: status ${res.status}`);
    await res.arrayBuffer().catch(() => {});
  }
  await assertHealthy("garbage POST");
});

test("websocket upgrade with an unknown sid is refused", async () => {
  const r = await rawWs("&sid=does-not-exist");
  const m = await r.next(() => true, 2000);
  assert.equal(m, null, `got a message: ${m}`);
  assert.ok(r.closed || (await r.waitClosed(2000)), "connection not refused");
  if (r.httpStatus !== undefined) assert.equal(r.httpStatus, 400);
});

// ---------------------------------------------------------------------------
// raw wire format

test("raw websocket: CONNECT reply, offsets on events, none on acks", async () => {
  const r = await (await rawWs()).open();
  assert.equal(typeof r.handshake.sid, "string");
  const c = await r.connectNsp("/");
  assert.equal(typeof c.sid, "string");
  assert.equal(typeof c.pid, "string");
  assert.ok(c.pid.length > 0);
  assert.notEqual(c.pid, c.sid);
  const c2 = await r.connectNsp("/custom");
  assert.notEqual(c2.sid, c.sid);
  assert.notEqual(c2.pid, c.pid);

  r.send('421["echo","x",{"a":1}]');
  const a1 = await r.next((m) => typeof m === "string" && m.startsWith("431"));
  assert.ok(a1, "no ack");
  assert.deepEqual(JSON.parse(a1.slice(3)), ["x", { a: 1 }], "the ack carries exactly the args, no offset");
  r.send('42["echo","x"]');
  const ev = await r.next((m) => typeof m === "string" && m.startsWith("42"));
  assert.ok(ev, "no echo event");
  const arr = JSON.parse(ev.slice(2));
  assert.equal(arr.length, 3, ev);
  assert.deepEqual(arr.slice(0, 2), ["echo", "x"]);
  h.assertOffset(arr[2]);
  r.send('42/custom,7["emit-to-self","p"]');
  const self = await r.next((m) => typeof m === "string" && m.startsWith("42/custom,["));
  const selfArr = JSON.parse(self.slice("42/custom,".length));
  assert.equal(selfArr[0], "self");
  assert.equal(selfArr[1], "p");
  h.assertOffset(selfArr[2]);
  const a7 = await r.next((m) => typeof m === "string" && m.startsWith("43/custom,7"));
  assert.ok(a7, "no ack for emit-to-self");
  assert.deepEqual(JSON.parse(a7.slice("43/custom,7".length)), []);

  // unknown namespace / denied
  r.send("40/nope,");
  const e1 = await r.next((m) => typeof m === "string" && m.startsWith("44/nope,"));
  assert.deepEqual(JSON.parse(e1.slice("44/nope,".length)), { message: "Invalid namespace" });
  r.send('40/short,{"deny":true}');
  const e2 = await r.next((m) => typeof m === "string" && m.startsWith("44/short,"));
  assert.equal(JSON.parse(e2.slice("44/short,".length)).message, "denied");

  // binary ack
  r.send('451-9["echo",{"_placeholder":true,"num":0}]');
  r.send(Buffer.from([1, 2, 3]));
  const ba = await r.next((m) => typeof m === "string" && m.startsWith("46"));
  assert.ok(ba && ba.startsWith("461-9["), `binary ack header: ${ba}`);
  assert.deepEqual(JSON.parse(ba.slice("461-9".length)), [{ _placeholder: true, num: 0 }]);
  const bin = await r.next((m) => Buffer.isBuffer(m));
  assert.deepEqual(bin, Buffer.from([1, 2, 3]));
  r.close();
});

// ---------------------------------------------------------------------------
// raw websocket garbage

const WS_GARBAGE = [
  ["engine.io garbage", "garbage"],
  ["unknown engine.io type", "9"],
  ["empty frame", ""],
  ["empty socket.io packet", "4"],
  ["socket.io garbage", "4garbage"],
  ["unknown socket.io type", "49[]"],
  ["bad JSON", '42[bad json'],
  ["event payload not an array", '42"not an array"'],
  ["event payload an object", '42{"a":1}'],
  ["empty event array", "42[]"],
  ["numeric event name", "42[1,2,3]"],
  ["huge attachment count", '451000000000-["echo",{"_placeholder":true,"num":0}]'],
  ["attachment count beyond 2^64", '4599999999999999999999999-["echo"]'],
  ["negative attachment count", '45-1-["echo"]'],
  ["attachment placeholder out of range", '451-["echo",{"_placeholder":true,"num":99}]'],
  ["event to a namespace not connected", '42/custom,["echo","x"]'],
  ["ack for an unknown id", '43999["x"]'],
  ["disconnect from a namespace not connected", "41/never,"],
  ["bad CONNECT JSON", "40/custom,{bad"],
  ["CONNECT auth not an object", '40/custom,"string"'],
  ["CONNECT auth array", "40/custom,[1,2]"],
  ["unexpected binary frame", Buffer.from([0, 1, 2, 3])],
  ["ping from the client (wrong direction)", "2"],
  ["pong without ping", "3"],
  ["upgrade packet", "5"],
  ["noop", "6"],
  ["deeply nested JSON", '42["echo",' + "[".repeat(20000) + "]".repeat(20000) + "]"],
  ["ack id overflow", '4299999999999999999999999["echo","x"]'],
  ["2 MB text frame", "4" + "x".repeat(2 * 1024 * 1024)],
];

test("raw websocket garbage: the connection is closed or the packet ignored; the server keeps serving", { timeout: 60000 }, async () => {
  const outcomes = [];
  let prev = "(nothing yet)";
  for (const [label, payload] of WS_GARBAGE) {
    const r = await rawWs();
    try {
      await r.open();
      await r.connectNsp("/");
    } catch (e) {
      assert.fail(`the server stopped serving after the garbage "${prev}" (${e.message})`);
    }
    prev = label;
    r.send(payload);
    // either the server closes the connection, or it still answers
    let outcome;
    if (await r.waitClosed(300)) outcome = "closed";
    else {
      r.send('4277["echo","alive"]');
      const m = await r.next((x) => x === '4377["alive"]' || x === "41" || (typeof x === "string" && x.startsWith("44")), 1500);
      if (m === '4377["alive"]') outcome = "ignored";
      else if (m === "41" || (m && m.startsWith("44"))) outcome = "namespace closed";
      else if (r.closed || (await r.waitClosed(500))) outcome = "closed";
      else outcome = "stuck";
    }
    outcomes.push(`${label}: ${outcome}`);
    assert.notEqual(outcome, "stuck", `${label}: connection neither closed nor answering`);
    r.close();
  }
  console.log("# " + outcomes.join("\n# "));
  await assertHealthy("ws garbage");
});

test("many half-finished handshakes and abrupt disconnects do not hurt", async () => {
  const net = require("node:net");
  const socks = [];
  for (let k = 0; k < 30; k++) {
    const s = net.connect({ host: h.HOST, port: srv.port });
    s.on("error", () => {});
    socks.push(s);
    s.on("connect", () => {
      if (k % 3 === 0) s.write("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"); // never finished
      else if (k % 3 === 1) s.write("POST /socket.io/?EIO=4&transport=polling&sid=x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n4"); // short body
      else s.write("\x00\x01\x02garbage\r\n\r\n");
    });
  }
  await h.sleep(300);
  for (const s of socks) s.destroy();
  // raw websockets that vanish without a close frame
  for (let k = 0; k < 10; k++) {
    const r = await (await rawWs()).open();
    await r.connectNsp("/");
    r.ws._socket.destroy();
  }
  await assertHealthy("half-finished handshakes");
});

// ---------------------------------------------------------------------------
// JSON as JavaScript writes it, and attachments

for (const transports of [["websocket"], ["polling"]]) {
  test(`lone surrogates round-trip with the official client (${transports[0]})`, async () => {
    const s = await h.connect(srv.url, "/", { transports });
    const args = ["😀".slice(0, 1), "a\udc00b", { ["k\ud800"]: ["\udbff", "😀"] }, "\ud83d\ud83d"];
    const back = await h.ackAll(s, "echo", ...args);
    assert.deepEqual(back, args);
    assert.equal(s.connected, true);
    // And to others, through a broadcast stored for recovery (offset appended).
    const tag = "\ud83d" + h.uid("surrogate");
    const got = h.collect(s, "self");
    await h.ack(s, "emit-to-self", tag);
    const [{ args: selfArgs }] = await got.waitFor(1);
    assert.equal(selfArgs[0], tag);
  });
}

tetherOnly(
  "JSON nested deeper than 127: the packet is dropped, the connection stays",
  "the reference parses any depth",
  async () => {
    const r = await rawWs();
    await r.open();
    await r.connectNsp("/");
    const deep = "[".repeat(200) + "]".repeat(200);
    r.send(`425["echo",${deep}]`);
    r.send('4277["echo","alive"]');
    assert.equal(await r.next((x) => x === '4377["alive"]'), '4377["alive"]');
    assert.equal(r.msgs.some((m) => typeof m === "string" && m.startsWith("435")), false, "the deep packet was not answered");
    assert.equal(r.closed, false);
    r.close();
    await assertHealthy("deep JSON");
  },
);

test("a packet announcing 11 attachments closes the connection (the limit is 10)", async () => {
  const r = await rawWs();
  await r.open();
  await r.connectNsp("/");
  const ph = Array.from({ length: 11 }, (_, num) => ({ _placeholder: true, num }));
  r.send(`4511-1${JSON.stringify(["echo", ...ph])}`);
  assert.equal(await r.waitClosed(3000), true);
  // Ten still work.
  const r2 = await rawWs();
  await r2.open();
  await r2.connectNsp("/");
  r2.send(`4510-1${JSON.stringify(["echo", ...ph.slice(0, 10)])}`);
  for (let k = 0; k < 10; k++) r2.send(Buffer.from([k]));
  const m = await r2.next((x) => typeof x === "string" && x.startsWith("4610-1"));
  assert.ok(m, "ten attachments are echoed");
  r.close();
  r2.close();
  await assertHealthy("attachments");
});

test("a text packet while attachments are awaited closes the connection, as the reference's parser", async () => {
  const r = await rawWs();
  await r.open();
  await r.connectNsp("/");
  r.send('451-["echo",{"_placeholder":true,"num":0}]');
  r.send('42["echo","in between"]');
  assert.equal(await r.waitClosed(3000), true);
  r.close();
  await assertHealthy("interleaved");
});
