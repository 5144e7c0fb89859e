// Server memory under abusive clients: RSS before, at the peak and after, for
//   polling   4 polling clients POST 900 kB acked echoes and never GET the answers
//   attach    4 WebSocket clients announce 256 binary attachments and send 990 kB ones,
//             never the last
//   noread    50 WebSocket clients ask for a flood of events and never read; counts
//             their TCP connections still open on the server after 30 s
//
//   node bench/abuse/rss.js polling|attach|noread   (env: PORT of a running
//   conformance-server, PID its process id)
// Run from the repository root after `npm ci` in tests/interop (for `ws`).
"use strict";
const path = require("node:path");
const fs = require("node:fs");
const { execSync } = require("node:child_process");
const WebSocket = require(path.resolve(__dirname, "../../tests/interop/node_modules/ws"));

const PORT = Number(process.env.PORT);
const PID = Number(process.env.PID);
const BASE = `http://127.0.0.1:${PORT}/socket.io/?EIO=4`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rssMb = () => {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${PID}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
};
let peak = 0;
const sampler = setInterval(() => (peak = Math.max(peak, rssMb())), 50);

async function polling() {
  const big = "y".repeat(900_000);
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      const open = await (await fetch(`${BASE}&transport=polling`)).text();
      const sid = JSON.parse(open.slice(1)).sid;
      const url = `${BASE}&transport=polling&sid=${sid}`;
      const post = (body) => fetch(url, { method: "POST", body }).then((r) => r.status);
      await post("40");
      await (await fetch(url)).text(); // the CONNECT reply
      let ok = 0;
      for (let i = 0; i < 200; i++) {
        if ((await post(`421${i}["echo","${big}"]`)) !== 200) break;
        ok++;
      }
      return ok;
    }),
  ).then((oks) => console.log(`accepted POSTs per client: ${oks.join(", ")}`));
}

function ws() {
  return new Promise((resolve, reject) => {
    const s = new WebSocket(`ws://127.0.0.1:${PORT}/socket.io/?EIO=4&transport=websocket`);
    s.on("error", reject);
    s.on("message", (d) => {
      const m = d.toString();
      if (m === "2") s.send("3");
      if (m.startsWith("40")) resolve(s);
    });
    s.on("open", () => s.send("40"));
  });
}

async function attach() {
  const mb = Buffer.alloc(990_000, 7);
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      const s = await ws();
      let closed = false;
      s.on("close", () => (closed = true));
      const ph = Array.from({ length: 256 }, (_, num) => ({ _placeholder: true, num }));
      s.send(`45256-${JSON.stringify(["echo", ...ph])}`);
      let sent = 0;
      for (; sent < 255 && !closed; sent++) {
        s.send(mb);
        await new Promise((r) => setImmediate(r));
        if (s.bufferedAmount > 8 << 20) await sleep(20);
      }
      await sleep(500);
      console.log(`sent ${sent} attachments, closed by the server: ${closed}`);
    }),
  );
}

async function noread() {
  const socks = [];
  for (let i = 0; i < 50; i++) {
    const s = await ws();
    s.send(`42["emit-numbered",{"count":20000,"tag":"${"t".repeat(5000)}"}]`);
    s._socket.pause(); // never read again
    socks.push(s);
  }
  await sleep(30_000);
  const open = execSync(`ss -tnH state established '( sport = :${PORT} )'`).toString().trim().split("\n").filter(Boolean).length;
  console.log(`server-side connections still open after 30 s: ${open} of 50`);
  socks.forEach((s) => s._socket.destroy());
}

(async () => {
  const before = rssMb();
  await { polling, attach, noread }[process.argv[2]]();
  const atEnd = rssMb();
  await sleep(5000);
  clearInterval(sampler);
  console.log(`RSS MB: before ${before.toFixed(1)}, peak ${peak.toFixed(1)}, at the end ${atEnd.toFixed(1)}, 5 s later ${rssMb().toFixed(1)}`);
  process.exit(0);
})();
