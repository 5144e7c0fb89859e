//! memtool: memory probes of a server implementing ../shared/bench/CONTRACT.md with CSR on.
//!
//!   memtool --addr 127.0.0.1:3000 --server-pid PID kept -n 100000 --batch 2000
//!       N connections join a room, each gets one broadcast (an offset), then all drop
//!       abruptly (RST), batch by batch (fds and ports are freed by the RST); RSS before and
//!       after gives bytes per kept session. A sample of the first batch then recovers, to
//!       show that the sessions were still kept when RSS was read. A first batch that leaves
//!       cleanly (not kept) warms the allocator up before the baseline is read.
//!   memtool ... packets -m 100000 --size 64
//!       One session in a room is dropped (kept), then M broadcasts go to the room: every
//!       one is stored for it; RSS before and after gives bytes per stored packet.
//!   memtool ... storm -c 5000 -m 100 --after-s 5
//!       RSS with C connected clients before an outage, during it (M packets stored), and
//!       `after-s` seconds after all C recovered (still connected): the recovery storm's
//!       leftover. Loss and duplicates are counted.
//!
//! One JSON line on stdout (and appended to --json-out). Source addresses rotate over
//! 127.0.0.1..=127.0.0.<src-ips> so that many connections do not run out of ports.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    probe: Probe,
    #[arg(long, global = true, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Source addresses 127.0.0.1..=127.0.0.<n>.
    #[arg(long, global = true, default_value_t = 4)]
    src_ips: u8,
    #[arg(long, global = true, default_value_t = 200)]
    connect_concurrency: usize,
    /// Seconds to wait before each RSS reading.
    #[arg(long, global = true, default_value_t = 3.0)]
    settle_s: f64,
    #[arg(long, global = true, default_value = "")]
    label: String,
    #[arg(long = "tag", global = true, value_name = "KEY=VALUE")]
    tags: Vec<String>,
    #[arg(long, global = true)]
    json_out: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Probe {
    /// Bytes per kept session.
    Kept {
        #[arg(short, long, default_value_t = 100_000)]
        n: usize,
        /// Connections alive at a time (a small batch keeps the transient memory of live
        /// connections small next to that of the kept sessions).
        #[arg(long, default_value_t = 2_000)]
        batch: usize,
        /// Sessions of the first batch that try to recover at the end.
        #[arg(long, default_value_t = 100)]
        check: usize,
    },
    /// Bytes per stored packet.
    Packets {
        #[arg(short, long, default_value_t = 100_000)]
        m: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// RSS before an outage and after a recovery storm.
    Storm {
        #[arg(short, long, default_value_t = 5000)]
        c: usize,
        #[arg(short, long, default_value_t = 100)]
        m: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 5.0)]
        after_s: f64,
    },
}

type Ws = WebSocketStream<TcpStream>;

struct Conn {
    ws: Ws,
    sid: String,
    pid: Option<String>,
    next_ack: u64,
}

fn rss_kb(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS"))
}

async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if t.as_str() == "2" {
                    ws.send(Message::text("3")).await?;
                    continue;
                }
                return Ok(t.as_str().to_owned());
            }
            Some(Ok(Message::Close(_))) | None => bail!("closed"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

impl Conn {
    /// Opens a websocket session and connects to `/` (with `auth`); returns the packets
    /// that came before the CONNECT reply too (replays may precede it).
    async fn open(
        addr: SocketAddr,
        src: Ipv4Addr,
        auth: Option<&str>,
    ) -> Result<(Conn, Vec<String>)> {
        let sock = TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(src.into(), 0))?;
        let tcp = sock.connect(addr).await.context("connect")?;
        tcp.set_nodelay(true)?;
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
            .await
            .context("upgrade")?;
        let open = next_text(&mut ws).await?;
        if !open.starts_with('0') {
            bail!("no OPEN: {open}");
        }
        ws.send(Message::text(match auth {
            Some(a) => format!("40{a}"),
            None => "40".to_owned(),
        }))
        .await?;
        let mut early = Vec::new();
        loop {
            let p = next_text(&mut ws).await?;
            if let Some(reply) = p.strip_prefix("40") {
                let v: Value = serde_json::from_str(reply)?;
                let sid = v["sid"]
                    .as_str()
                    .ok_or_else(|| anyhow!("no sid"))?
                    .to_owned();
                let pid = v["pid"].as_str().map(str::to_owned);
                return Ok((
                    Conn {
                        ws,
                        sid,
                        pid,
                        next_ack: 0,
                    },
                    early,
                ));
            }
            if p.starts_with("44") {
                bail!("connect refused: {p}");
            }
            early.push(p);
        }
    }

    /// Emits `event` with `args` (JSON list items) and waits for its ack; other packets are
    /// returned.
    async fn call(&mut self, event: &str, args: &str) -> Result<Vec<String>> {
        let id = self.next_ack;
        self.next_ack += 1;
        self.ws
            .send(Message::text(format!("42{id}[\"{event}\",{args}]")))
            .await?;
        let want = format!("43{id}");
        let mut other = Vec::new();
        loop {
            let p = tokio::time::timeout(Duration::from_secs(60), next_text(&mut self.ws))
                .await
                .map_err(|_| anyhow!("no ack for {event}"))??;
            if p.starts_with(&want) {
                return Ok(other);
            }
            other.push(p);
        }
    }

    async fn feed(&mut self, event: &str, args: &str) -> Result<()> {
        self.ws
            .feed(Message::text(format!("42[\"{event}\",{args}]")))
            .await?;
        Ok(())
    }

    /// Closes the TCP connection with an RST (no close frame): an abrupt drop.
    fn abort(self) {
        let _ = socket2::SockRef::from(self.ws.get_ref()).set_linger(Some(Duration::ZERO));
        drop(self.ws);
    }
}

/// The seq and offset of a `tick` (`42["tick","<seq>:...","<offset>"]`).
fn tick(p: &str) -> Option<(u64, Option<String>)> {
    let v: Value = serde_json::from_str(p.strip_prefix("42")?).ok()?;
    let a = v.as_array()?;
    if a.first()?.as_str()? != "tick" {
        return None;
    }
    let seq = a.get(1)?.as_str()?.split(':').next()?.parse().ok()?;
    Some((seq, a.get(2).and_then(Value::as_str).map(str::to_owned)))
}

struct Ctx {
    addr: SocketAddr,
    src_ips: u8,
    sem: Arc<Semaphore>,
}

impl Ctx {
    fn src(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, 1 + (i % self.src_ips.max(1) as usize) as u8)
    }

    /// Opens `n` connections that join `room`; fails if one fails.
    async fn open_many(self: &Arc<Self>, n: usize, first: usize, room: &str) -> Result<Vec<Conn>> {
        let mut hs = Vec::with_capacity(n);
        for i in 0..n {
            let (ctx, room) = (self.clone(), room.to_owned());
            hs.push(tokio::spawn(async move {
                let _p = ctx.sem.clone().acquire_owned().await?;
                let (mut c, _) = Conn::open(ctx.addr, ctx.src(first + i), None).await?;
                c.call("join", &Value::from(room).to_string()).await?;
                anyhow::Ok(c)
            }));
        }
        let mut out = Vec::with_capacity(n);
        for h in hs {
            out.push(h.await??);
        }
        Ok(out)
    }
}

/// Each connection reads its first tick: its offset.
async fn offsets(conns: Vec<Conn>) -> Result<Vec<(Conn, String)>> {
    let mut hs = Vec::with_capacity(conns.len());
    for mut c in conns {
        hs.push(tokio::spawn(async move {
            let off = tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    if let Some((_, off)) = tick(&next_text(&mut c.ws).await?) {
                        return off.ok_or_else(|| anyhow!("a tick without an offset: no CSR"));
                    }
                }
            })
            .await
            .map_err(|_| anyhow!("no tick"))??;
            anyhow::Ok((c, off))
        }));
    }
    let mut out = Vec::with_capacity(hs.len());
    for h in hs {
        out.push(h.await??);
    }
    Ok(out)
}

async fn settle(s: f64) {
    tokio::time::sleep(Duration::from_secs_f64(s)).await;
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = rt.block_on(run(&cli))?;
    out.insert("label".into(), cli.label.clone().into());
    for t in &cli.tags {
        let (k, v) = t.split_once('=').unwrap_or((t.as_str(), ""));
        out.insert(k.to_owned(), v.into());
    }
    let line = Value::Object(out).to_string();
    println!("{line}");
    if let Some(p) = &cli.json_out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)?;
        writeln!(f, "{line}")?;
    }
    std::process::exit(0);
}

async fn run(cli: &Cli) -> Result<Map<String, Value>> {
    let ctx = Arc::new(Ctx {
        addr: cli.addr,
        src_ips: cli.src_ips,
        sem: Arc::new(Semaphore::new(cli.connect_concurrency.max(1))),
    });
    let pid = cli
        .server_pid
        .ok_or_else(|| anyhow!("--server-pid is required"))?;
    let mut m = Map::new();
    let (mut ctl, _) = Conn::open(cli.addr, ctx.src(0), None).await?;
    if ctl.pid.is_none() {
        bail!("the CONNECT reply has no pid: start the server with CSR=1");
    }
    match cli.probe {
        Probe::Kept { n, batch, check } => {
            m.insert("probe".into(), "kept".into());
            // Warm-up: one batch that leaves cleanly (not kept), so that the baseline already
            // holds the allocator's share of one batch of live connections.
            for mut c in ctx.open_many(batch.min(n), 0, "warm").await? {
                let _ = c.ws.send(Message::text("41")).await;
                let _ = c.ws.close(None).await;
            }
            settle(cli.settle_s).await;
            let rss0 = rss_kb(pid)?;
            let t0 = Instant::now();
            let mut sample = Vec::new();
            let mut done = 0;
            while done < n {
                let b = batch.min(n - done);
                let conns = ctx.open_many(b, done, "kept").await?;
                ctl.call("broadcast", &format!("\"kept\",\"0:0:{done}\""))
                    .await?;
                for (c, off) in offsets(conns).await? {
                    if sample.len() < check {
                        sample.push((c.pid.clone().unwrap_or_default(), off));
                    }
                    c.abort();
                }
                done += b;
                eprintln!(
                    "memtool kept: {done}/{n} dropped ({:.1}s)",
                    t0.elapsed().as_secs_f64()
                );
            }
            let t_drop = t0.elapsed().as_secs_f64();
            settle(cli.settle_s).await;
            let rss1 = rss_kb(pid)?;
            let t_read = t0.elapsed().as_secs_f64();
            let mut recovered = 0;
            for (i, (p, off)) in sample.iter().enumerate() {
                let auth = serde_json::json!({"pid": p, "offset": off}).to_string();
                let (c, _) = Conn::open(cli.addr, ctx.src(i), Some(&auth)).await?;
                recovered += usize::from(c.pid.as_deref() == Some(p.as_str()));
                c.abort();
            }
            m.insert("kept".into(), n.into());
            m.insert("drop_s".into(), t_drop.into());
            m.insert("rss_read_at_s".into(), t_read.into());
            m.insert("rss_before_kb".into(), rss0.into());
            m.insert("rss_after_kb".into(), rss1.into());
            m.insert(
                "bytes_per_kept_session".into(),
                ((rss1 as f64 - rss0 as f64) * 1024.0 / n as f64)
                    .round()
                    .into(),
            );
            m.insert("check_attempted".into(), sample.len().into());
            m.insert("check_recovered".into(), recovered.into());
        }
        Probe::Packets { m: count, size } => {
            m.insert("probe".into(), "packets".into());
            let mut holder = ctx.open_many(1, 1, "pk").await?;
            ctl.call("broadcast", "\"pk\",\"0:0:\"").await?;
            for (c, _) in offsets(std::mem::take(&mut holder)).await? {
                c.abort();
            }
            settle(cli.settle_s).await;
            let rss0 = rss_kb(pid)?;
            let pad = "x".repeat(size);
            let t0 = Instant::now();
            for seq in 1..=count {
                let args = format!("\"pk\",\"{seq}:0:{pad}\"");
                if seq % 1000 == 0 || seq == count {
                    ctl.feed("broadcast", &args).await?;
                    ctl.call("echo", "\"sync\"").await?;
                } else {
                    ctl.feed("broadcast", &args).await?;
                }
            }
            let emit_s = t0.elapsed().as_secs_f64();
            settle(cli.settle_s).await;
            let rss1 = rss_kb(pid)?;
            m.insert("packets".into(), count.into());
            m.insert("payload_bytes".into(), (size + 20).into());
            m.insert("emit_s".into(), emit_s.into());
            m.insert("rss_before_kb".into(), rss0.into());
            m.insert("rss_after_kb".into(), rss1.into());
            m.insert(
                "bytes_per_stored_packet".into(),
                ((rss1 as f64 - rss0 as f64) * 1024.0 / count as f64)
                    .round()
                    .into(),
            );
        }
        Probe::Storm {
            c,
            m: count,
            size,
            after_s,
        } => {
            m.insert("probe".into(), "storm".into());
            let rss_idle = rss_kb(pid)?;
            let conns = ctx.open_many(c, 1, "rec").await?;
            ctl.call("broadcast", "\"rec\",\"0:0:\"").await?;
            let sessions = offsets(conns).await?;
            settle(cli.settle_s).await;
            let rss_before = rss_kb(pid)?;
            let mut creds = Vec::with_capacity(c);
            for (conn, off) in sessions {
                creds.push((conn.pid.clone().unwrap_or_default(), conn.sid.clone(), off));
                conn.abort();
            }
            settle(1.0).await;
            let pad = "x".repeat(size);
            for seq in 1..=count {
                ctl.feed("broadcast", &format!("\"rec\",\"{seq}:0:{pad}\""))
                    .await?;
            }
            ctl.call("echo", "\"sync\"").await?;
            let rss_outage = rss_kb(pid)?;
            // Peak RSS during the reconnect storm, sampled every 20 ms.
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let peak = {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut peak = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        peak = peak.max(rss_kb(pid).unwrap_or(0));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    peak
                })
            };
            let t0 = Instant::now();
            let mut hs = Vec::with_capacity(c);
            for (i, (p, sid, off)) in creds.into_iter().enumerate() {
                let ctx = ctx.clone();
                hs.push(tokio::spawn(async move {
                    let _permit = ctx.sem.clone().acquire_owned().await?;
                    let auth = serde_json::json!({"pid": p, "offset": off}).to_string();
                    let (mut conn, early) = Conn::open(ctx.addr, ctx.src(i), Some(&auth)).await?;
                    let recovered = conn.pid.as_deref() == Some(p.as_str()) && conn.sid == sid;
                    let mut seen = vec![false; count as usize + 1];
                    let (mut got, mut dup) = (0u64, 0u64);
                    let note = |p: &str, seen: &mut Vec<bool>, got: &mut u64, dup: &mut u64| {
                        if let Some((s, _)) = tick(p) {
                            if s >= 1 && s <= count {
                                if seen[s as usize] {
                                    *dup += 1;
                                } else {
                                    seen[s as usize] = true;
                                    *got += 1;
                                }
                            }
                        }
                    };
                    for p in &early {
                        note(p, &mut seen, &mut got, &mut dup);
                    }
                    while recovered && got < count {
                        match tokio::time::timeout(Duration::from_secs(30), next_text(&mut conn.ws))
                            .await
                        {
                            Ok(p) => note(&p?, &mut seen, &mut got, &mut dup),
                            Err(_) => break,
                        }
                    }
                    anyhow::Ok((conn, recovered, got, dup))
                }));
            }
            let (mut conns, mut recovered, mut got, mut dup) = (Vec::new(), 0u64, 0u64, 0u64);
            for h in hs {
                let (conn, r, g, d) = h.await??;
                conns.push(conn);
                recovered += u64::from(r);
                got += g;
                dup += d;
            }
            let t_all = t0.elapsed().as_secs_f64();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let rss_peak = peak.await?;
            let rss_done = rss_kb(pid)?;
            // The recovered clients stay connected (pings answered) while RSS settles.
            let keep: Vec<_> = conns
                .into_iter()
                .map(|mut conn| {
                    tokio::spawn(async move { while next_text(&mut conn.ws).await.is_ok() {} })
                })
                .collect();
            settle(after_s).await;
            let rss_after = rss_kb(pid)?;
            m.insert("clients".into(), c.into());
            m.insert("m".into(), count.into());
            m.insert("recovered".into(), recovered.into());
            m.insert("expected".into(), (c as u64 * count).into());
            m.insert("received".into(), got.into());
            m.insert("lost".into(), (c as u64 * count).saturating_sub(got).into());
            m.insert("dup".into(), dup.into());
            m.insert("t_all_recovered_s".into(), t_all.into());
            m.insert("rss_idle_kb".into(), rss_idle.into());
            m.insert("rss_before_outage_kb".into(), rss_before.into());
            m.insert("rss_outage_kb".into(), rss_outage.into());
            m.insert("rss_peak_storm_kb".into(), rss_peak.into());
            m.insert("rss_storm_done_kb".into(), rss_done.into());
            m.insert("rss_after_kb".into(), rss_after.into());
            m.insert("after_s".into(), after_s.into());
            drop(keep);
        }
    }
    Ok(m)
}
