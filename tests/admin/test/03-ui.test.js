// The official Admin UI bundle (the npm package's ui/dist, served by the node under
// /admin/) in headless Chromium: log in, see the connected sockets and the servers; with
// two nodes on Redis, both nodes are listed and a socket on the other node disconnected
// from the UI really disconnects.
//
// The page's web fonts and icon font come from CDNs; the test blocks every request that
// does not go to the node, so it needs no network (the icons are then blank, and the
// buttons are found by their icon's class).
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");
const { chromium } = require("playwright-core");
const { io } = require("socket.io-client");
const { start, stop, next, clusterEnv, dropClusters, USER, PASSWORD, HASH } = require("../lib/server");

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || "/tmp";
let browser;
const servers = [];
const clients = [];

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
});

after(async () => {
  for (const c of clients) c.disconnect();
  for (const s of servers) await stop(s);
  dropClusters();
  if (browser) await browser.close();
});

function user(url, opts = {}) {
  const c = io(url, { forceNew: true, reconnection: false, transports: ["websocket"], ...opts });
  clients.push(c);
  return c;
}

// Opens the dashboard served by `srv` and logs in through its connection form.
async function login(srv) {
  const page = await browser.newPage();
  await page.route((url) => !url.href.startsWith(srv.url), (r) => r.abort());
  await page.goto(`${srv.url}/admin/`);
  await page.getByLabel("Server URL").fill(srv.url);
  await page.getByLabel("Username").fill(USER);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Connect" }).click();
  await page.getByRole("button", { name: "Connect" }).waitFor({ state: "hidden", timeout: 10000 });
  await page.getByText(/^connected$/i).locator("visible=true").first().waitFor({ timeout: 10000 });
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SCREENSHOT_DIR, `tether-admin-${name}.png`) });
}

test("one node: log in with the bundle, see the sockets, a recovery and the server", async () => {
  const srv = await start({ ADMIN_AUTH: `${USER}:${HASH}` });
  servers.push(srv);
  const alice = user(srv.url);
  const bob = user(srv.url, { transports: ["polling"] });
  await Promise.all([next(alice, "connect"), next(bob, "connect")]);

  // A wrong password is refused by the server, and the form says so.
  const denied = await browser.newPage();
  await denied.route((url) => !url.href.startsWith(srv.url), (r) => r.abort());
  await denied.goto(`${srv.url}/admin/`);
  await denied.getByLabel("Server URL").fill(srv.url);
  await denied.getByLabel("Username").fill(USER);
  await denied.getByLabel("Password").fill("wrong");
  await denied.getByRole("button", { name: "Connect" }).click();
  await denied.getByText("Invalid credentials").waitFor({ timeout: 10000 });
  await denied.close();

  const page = await login(srv);
  await page.goto(`${srv.url}/admin/#/sockets/`);
  await page.getByText(alice.id).waitFor({ timeout: 10000 });
  await page.getByText(bob.id).waitFor({ timeout: 10000 });
  const row = (id) => page.locator("tr", { hasText: id });
  assert.match(await row(alice.id).innerText(), /WebSocket/);
  assert.match(await row(bob.id).innerText(), /HTTP long-polling|polling/i);

  // A socket that connects now appears without a reload.
  const carol = user(srv.url);
  await next(carol, "connect");
  await page.getByText(carol.id).waitFor({ timeout: 10000 });
  await shot(page, "sockets");

  // A recovery, as the dashboard sees it: the socket drops and comes back with its id.
  const dave = user(srv.url, { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 100 });
  await next(dave, "connect");
  const daveId = dave.id;
  await page.getByText(daveId).waitFor({ timeout: 10000 });
  dave.io.engine.close(); // a network drop
  await next(dave, "connect");
  assert.equal(dave.recovered, true);
  assert.equal(dave.id, daveId);
  await page.goto(`${srv.url}/admin/#/events/`);
  const daveRows = page.locator("tbody tr", { hasText: daveId });
  await daveRows.filter({ hasText: /disconnection/i }).first().waitFor({ timeout: 10000 });
  await page.waitForFunction(
    (id) => [...document.querySelectorAll("tbody tr")].filter((tr) => tr.innerText.includes(id)
      && /(^|\s)connection/i.test(tr.innerText) && !/disconnection/i.test(tr.innerText)).length === 2,
    daveId,
    { timeout: 10000 },
  );
  await shot(page, "events-recovery");
  await page.goto(`${srv.url}/admin/#/sockets/`);
  // Still listed, connected, with its id (the events page may still be in the DOM).
  await page.locator("tr", { hasText: daveId }).filter({ hasText: "WebSocket" }).first().waitFor({ timeout: 10000 });

  await page.goto(`${srv.url}/admin/#/servers/`);
  const servRow = page.locator("tbody tr", { hasText: / ago/ }).first();
  await servRow.getByText("HEALTHY").waitFor({ timeout: 10000 });
  assert.equal(await page.locator("tbody tr", { hasText: / ago/ }).count(), 1);
  await page.close();
});

test("two nodes on Redis: both listed, a socket on the other node disconnected from the UI", async () => {
  const env = clusterEnv("ui");
  const a = await start({ ...env, NODE_NAME: "node-a", ADMIN_AUTH: `${USER}:${HASH}` });
  servers.push(a);
  const b = await start({ ...env, NODE_NAME: "node-b", ADMIN_AUTH: `${USER}:${HASH}` });
  servers.push(b);
  const onA = user(a.url);
  const onB = user(b.url);
  await Promise.all([next(onA, "connect"), next(onB, "connect")]);

  const page = await login(a);
  await page.goto(`${a.url}/admin/#/servers/`);
  await page.locator("tbody tr", { hasText: "node-a:" }).waitFor({ timeout: 10000 });
  await page.locator("tbody tr", { hasText: "node-b:" }).waitFor({ timeout: 10000 });
  // Rows of the servers table (the dashboard's tables may still be in the page).
  const rows = await page.locator("tbody tr", { hasText: / ago/ }).allInnerTexts();
  assert.equal(rows.length, 2, rows.join("\n"));
  await shot(page, "servers");

  await page.goto(`${a.url}/admin/#/sockets/`);
  await page.getByText(onA.id).waitFor({ timeout: 10000 });
  const idB = onB.id; // unset once it is disconnected
  const rowB = page.locator("tr", { hasText: idB });
  await rowB.waitFor({ timeout: 10000 });

  const gone = next(onB, "disconnect", () => true, 10000);
  await rowB.locator("button:has(.mdi-logout)").click();
  const [reason] = await gone;
  assert.equal(reason, "io server disconnect");
  await page.getByText(idB).waitFor({ state: "detached", timeout: 10000 });
  assert.ok(onA.connected, "only the chosen socket is disconnected");
  await shot(page, "after-disconnect");
  await page.close();
});
