// End to end, in headless Chromium: the chat example (examples/chat) on the official
// socket.io-client. Alice drops her connection with the page's button, Bob sends messages
// while she is away, and Alice's page must show each of them exactly once, in order,
// marked as replayed, and report the reconnection as recovered.
//
// Environment:
//   CHAT_BIN        the tether-chat binary (default: build it with cargo, then use
//                   <repo>/target/release/tether-chat)
//   CHROMIUM        the browser (default /usr/bin/chromium)
//   SCREENSHOT_DIR  where the screenshots go (default /tmp)
//   SERVER_LOG=1    copy the server's output to stderr
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { spawn, spawnSync } = require("node:child_process");
const path = require("node:path");
const readline = require("node:readline");
const { chromium } = require("playwright-core");

const ROOT = path.resolve(__dirname, "../../..");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || "/tmp";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
// Alice's fixed reconnection delay: Bob's messages must all be sent within it (checked).
const RECONNECT_DELAY_MS = 3000;
const MISSED = ["missed 1: are you there?", "missed 2", "missed 3 <b>not bold</b>", "missed 4 ✓ ünïcödé", "missed 5, last one"];

let bin;
let server; // { proc, url, log }
let browser;

function chatBinary() {
  if (process.env.CHAT_BIN) return process.env.CHAT_BIN;
  const build = spawnSync("cargo", ["build", "--release", "-p", "tether-chat"], { cwd: ROOT, stdio: "inherit" });
  assert.equal(build.status, 0, "cargo build --release -p tether-chat failed");
  return path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "release", "tether-chat");
}

// Starts the example (by default on a free port: PORT=0) and resolves once it prints its URL.
function startServer(port = 0) {
  return new Promise((resolve, reject) => {
    const proc = spawn(bin, [], {
      env: { ...process.env, PORT: String(port), HOST: "127.0.0.1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const log = [];
    const timer = setTimeout(() => reject(new Error(`no URL from ${bin} within 10 s:\n${log.join("\n")}`)), 10000);
    proc.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.on("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${bin} exited early (${code ?? signal}):\n${log.join("\n")}`));
    });
    for (const stream of [proc.stdout, proc.stderr]) {
      readline.createInterface({ input: stream }).on("line", (line) => {
        log.push(line);
        if (process.env.SERVER_LOG === "1") process.stderr.write(`[server] ${line}\n`);
        const m = /listening on (http:\/\/\S+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve({ proc, url: m[1], log });
        }
      });
    }
  });
}

async function stopServer(srv) {
  if (srv.proc.exitCode !== null || srv.proc.signalCode !== null) return;
  const exited = new Promise((r) => srv.proc.once("exit", r));
  srv.proc.kill("SIGTERM");
  await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
  if (srv.proc.exitCode === null && srv.proc.signalCode === null) srv.proc.kill("SIGKILL");
}

before(async () => {
  bin = chatBinary();
  server = await startServer();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  if (browser) await browser.close();
  if (server) await stopServer(server);
});

// A page in its own browser context (its own storage, like another person), with its
// console errors and uncaught exceptions collected.
async function openChat(query, url = server.url) {
  const context = await browser.newContext({ viewport: { width: 900, height: 720 } });
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") page.errors.push(`console: ${m.text()} (${m.location().url})`);
  });
  await page.goto(`${url}?${new URLSearchParams(query)}`);
  await waitState(page, "connected");
  // Upgraded, so that the drop hits the websocket like a real network failure would.
  await page.waitForFunction(() => document.getElementById("transport").textContent === "websocket", null, { timeout: 10000 });
  return page;
}

function waitState(page, state, timeout = 10000) {
  return page.waitForFunction((s) => document.getElementById("status").dataset.state === s, state, { timeout });
}

const state = (page) => page.$eval("#status", (el) => el.dataset.state);

// What the page shows: its chat messages, in order.
function messages(page) {
  return page.$$eval("#messages li.msg", (lis) =>
    lis.map((li) => ({
      name: li.querySelector(".name").textContent,
      text: li.querySelector(".text").textContent,
      replayed: li.dataset.replayed === "true",
      badge: li.querySelector(".badge") !== null,
      offset: li.dataset.offset,
    })),
  );
}

// Waits until the page shows `n` chat messages (or more).
function waitMessages(page, n, timeout = 10000) {
  return page.waitForFunction((k) => document.querySelectorAll("#messages li.msg").length >= k, n, { timeout });
}

async function send(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

const view = (list) => list.map(({ name, text, replayed }) => ({ name, text, replayed }));

test("serves the page and the official client bundle", async () => {
  const page = await fetch(server.url);
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type"), /^text\/html/);
  assert.match(await page.text(), /<title>Tether chat<\/title>/);
  const bundle = await fetch(new URL("/socket.io.min.js", server.url));
  assert.equal(bundle.status, 200);
  assert.match(await bundle.text(), /^\/\*!\n \* Socket\.IO v4\.8\.\d+\n[^]*Released under the MIT License/);
  assert.equal((await fetch(new URL("/nope", server.url))).status, 404);
});

test("a dropped page recovers and shows every missed message once, in order, marked as replayed", { timeout: 60000 }, async () => {
  const alice = await openChat({ name: "Alice", reconnectDelay: RECONNECT_DELAY_MS });
  const bob = await openChat({ name: "Bob" });
  try {
    // Live traffic first: nothing is marked.
    await send(alice, "hi Bob");
    await waitMessages(bob, 1);
    await send(bob, "hi Alice");
    await waitMessages(alice, 2);
    await waitMessages(bob, 2);
    const aliceId = await alice.textContent("#sid");
    assert.match(aliceId, /^\S{10,}$/, "the page shows the socket id");
    assert.equal(await alice.textContent("#recovery"), "–", "no reconnection yet");

    // Alice drops her connection; her client waits RECONNECT_DELAY_MS before coming back.
    await alice.click("#drop");
    await alice.waitForFunction(() => document.getElementById("status").dataset.state !== "connected", null, { timeout: 5000 });
    assert.equal(await alice.isDisabled("#drop"), true, "nothing to drop while disconnected");

    // Bob talks while she is away.
    for (const text of MISSED) await send(bob, text);
    await waitMessages(bob, 2 + MISSED.length);
    assert.notEqual(await state(alice), "connected", `Alice came back before Bob's messages were all sent (delay ${RECONNECT_DELAY_MS} ms too short for this machine)`);
    await alice.screenshot({ path: path.join(SCREENSHOT_DIR, "tether-chat-alice-offline.png") });

    // She comes back by herself, with the same id, and the page says it recovered.
    await waitState(alice, "connected", RECONNECT_DELAY_MS + 10000);
    await alice.waitForFunction(() => document.getElementById("recovery").textContent.startsWith("recovered ✓"), null, { timeout: 5000 });
    assert.equal(await alice.getAttribute("#recovery", "data-recovered"), "true");
    assert.equal(await alice.textContent("#recovery"), `recovered ✓ (${MISSED.length} replayed)`);
    assert.equal(await alice.textContent("#sid"), aliceId, "same socket id after recovery");
    await alice.waitForFunction(() => document.getElementById("transport").textContent === "websocket", null, { timeout: 10000 });

    // A message after the recovery is live again.
    await send(bob, "welcome back");
    await waitMessages(alice, 2 + MISSED.length + 1);
    await waitMessages(bob, 2 + MISSED.length + 1);
    await new Promise((r) => setTimeout(r, 300)); // room for a duplicate to show up

    const expected = [
      { name: "Alice", text: "hi Bob", replayed: false },
      { name: "Bob", text: "hi Alice", replayed: false },
      ...MISSED.map((text) => ({ name: "Bob", text, replayed: true })),
      { name: "Bob", text: "welcome back", replayed: false },
    ];
    const seenByAlice = await messages(alice);
    assert.deepEqual(view(seenByAlice), expected, "Alice: every message once, in order, the missed ones marked");
    for (const m of seenByAlice) assert.equal(m.badge, m.replayed, `badge matches data-replayed for ${JSON.stringify(m.text)}`);
    const offsets = seenByAlice.map((m) => m.offset);
    assert.ok(offsets.every((o) => typeof o === "string" && o.length > 0), "every chat event carried an offset");
    assert.equal(new Set(offsets).size, offsets.length, "no offset twice");

    const seenByBob = await messages(bob);
    assert.deepEqual(view(seenByBob), expected.map((m) => ({ ...m, replayed: false })), "Bob saw everything live");
    assert.equal(await bob.textContent("#recovery"), "–");
    assert.deepEqual(
      view(seenByBob).map((m) => m.text),
      view(seenByAlice).map((m) => m.text),
      "both pages show the same conversation",
    );

    assert.deepEqual(alice.errors, [], "no script error on Alice's page");
    assert.deepEqual(bob.errors, [], "no script error on Bob's page");
  } catch (e) {
    process.stderr.write(`--- server log ---\n${server.log.join("\n")}\n------------------\n`);
    throw e;
  } finally {
    await alice.screenshot({ path: path.join(SCREENSHOT_DIR, "tether-chat-alice.png") });
    await bob.screenshot({ path: path.join(SCREENSHOT_DIR, "tether-chat-bob.png") });
    await alice.context().close();
    await bob.context().close();
  }
});

test("after a server restart the page reconnects as a new session and says it did not recover", { timeout: 60000 }, async () => {
  // Its own server: the session store is in memory, so a restart loses every session.
  let srv = await startServer();
  const port = new URL(srv.url).port;
  const carol = await openChat({ name: "Carol", reconnectDelay: 500 }, srv.url);
  try {
    await send(carol, "before the restart");
    await waitMessages(carol, 1);
    const idBefore = await carol.textContent("#sid");

    await stopServer(srv);
    await carol.waitForFunction(() => document.getElementById("status").dataset.state !== "connected", null, { timeout: 5000 });
    srv = await startServer(port);

    await waitState(carol, "connected", 15000);
    assert.equal(await carol.getAttribute("#recovery", "data-recovered"), "false");
    assert.equal(await carol.textContent("#recovery"), "not recovered");
    assert.notEqual(await carol.textContent("#sid"), idBefore, "a new socket id");
    assert.ok(
      (await carol.$$eval("#messages li.sys", (lis) => lis.map((li) => li.textContent))).some((t) => t.startsWith("Reconnected as a new session")),
      "the page says the missed messages are lost",
    );

    await send(carol, "after the restart");
    await waitMessages(carol, 2);
    assert.deepEqual(view(await messages(carol)), [
      { name: "Carol", text: "before the restart", replayed: false },
      { name: "Carol", text: "after the restart", replayed: false },
    ]);
    assert.deepEqual(carol.errors.filter((e) => !/ERR_CONNECTION_REFUSED|Failed to load resource/.test(e)), [], "no script error");
  } catch (e) {
    process.stderr.write(`--- server log ---\n${srv.log.join("\n")}\n------------------\n`);
    throw e;
  } finally {
    await carol.screenshot({ path: path.join(SCREENSHOT_DIR, "tether-chat-carol-restart.png") });
    await carol.context().close();
    await stopServer(srv);
  }
});
