//! pollload: the `fanout` scenario of ../shared/bench/sioload over Engine.IO v4 HTTP
//! long-polling (no upgrade). C polling clients open a session on `/`, each `join`s a room
//! (acked), then one more polling client emits `broadcast` to the room at a target rate with
//! the payload `"<seq>:<t_ns>:<pad>"` (../shared/bench/CONTRACT.md). Reports delivered msgs/s,
//! server CPU per delivered message (/proc/PID/stat), p50/p99 end-to-end latency, lost and
//! duplicated messages, as one JSON line on stdout (and appended to --json-out).
//!
//!   pollload --addr 127.0.0.1:3000 --server-pid PID -c 1000 -r 50 -d 10 --warmup-s 2
//!
//! Each client holds two keep-alive HTTP/1.1 connections: one for its GETs (always one
//! pending, as a browser does) and one for its POSTs (the join, pongs; the sender's
//! broadcasts, batched per millisecond, one POST in flight at a time as Engine.IO requires).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

static START: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since process start: the clock of the embedded timestamps.
fn now_ns() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[derive(Parser, Debug)]
#[command(about = "Engine.IO v4 long-polling fan-out load generator")]
struct Cli {
    /// Server address host:port.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: String,
    /// Engine.IO path.
    #[arg(long, default_value = "/socket.io/")]
    path: String,
    /// Server PID: enables server CPU and RSS reporting.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Receiving clients.
    #[arg(short, long, default_value_t = 1000)]
    clients: usize,
    /// Broadcasts per second emitted by the sender.
    #[arg(short, long, default_value_t = 50.0)]
    rate: f64,
    /// Measurement window in seconds (after the warm-up).
    #[arg(short, long, default_value_t = 10.0)]
    duration_s: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup_s: f64,
    /// Padding of each broadcast payload, in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    #[arg(long, default_value = "bench")]
    room: String,
    /// Max time to wait after the last send for in-flight deliveries.
    #[arg(long, default_value_t = 5.0)]
    drain_s: f64,
    /// Concurrent session opens.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Free-form label copied into the JSON line.
    #[arg(long, default_value = "")]
    label: String,
    /// Extra KEY=VALUE fields copied into the JSON line (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// Also append the JSON line to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

/// One keep-alive HTTP/1.1 connection, reopened when the server closed it while idle.
struct Http {
    addr: Arc<str>,
    send: Option<SendRequest<Full<Bytes>>>,
}

impl Http {
    fn new(addr: Arc<str>) -> Self {
        Http { addr, send: None }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let tcp = TcpStream::connect(&*self.addr).await.context("connect")?;
        tcp.set_nodelay(true)?;
        let (send, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(send)
    }

    async fn request(&mut self, method: Method, uri: &str, body: Bytes) -> Result<Bytes> {
        let mut send = match self.send.take() {
            Some(mut s) => match s.ready().await {
                Ok(()) => s,
                Err(_) => self.connect().await?,
            },
            None => self.connect().await?,
        };
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::HOST, &*self.addr)
            .header(hyper::header::CONTENT_TYPE, "text/plain;charset=UTF-8")
            .body(Full::new(body))?;
        let resp = send.send_request(req).await.context("request")?;
        let status = resp.status();
        let keep = !resp
            .headers()
            .get(hyper::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{status}: {}", String::from_utf8_lossy(&body));
        }
        if keep {
            self.send = Some(send);
        }
        Ok(body)
    }
}

/// An Engine.IO polling session with a Socket.IO connection on `/`.
struct Session {
    uri: String,
    get: Http,
    post: Http,
}

impl Session {
    async fn poll(&mut self) -> Result<Vec<String>> {
        let body = self
            .get
            .request(Method::GET, &self.uri, Bytes::new())
            .await?;
        let text = String::from_utf8(body.to_vec()).map_err(|_| anyhow!("non-UTF-8 body"))?;
        Ok(text.split('\u{1e}').map(str::to_owned).collect())
    }

    async fn send(&mut self, packets: &[String]) -> Result<()> {
        let body = Bytes::from(packets.join("\u{1e}"));
        let uri = self.uri.clone();
        self.post.request(Method::POST, &uri, body).await?;
        Ok(())
    }

    /// Polls until a packet starting with `prefix` arrives, answering pings.
    async fn wait_for(&mut self, prefix: &str) -> Result<()> {
        loop {
            let mut found = false;
            for p in self.poll().await? {
                if p == "2" {
                    self.send(&["3".into()]).await?;
                } else if p.starts_with(prefix) {
                    found = true;
                } else if p == "1" || p.starts_with("41") || p.starts_with("44") {
                    bail!("session closed while waiting for {prefix:?}: {p}");
                }
            }
            if found {
                return Ok(());
            }
        }
    }

    async fn open(addr: Arc<str>, path: &str, room: Option<&str>) -> Result<Session> {
        let mut get = Http::new(addr.clone());
        let open = get
            .request(
                Method::GET,
                &format!("{path}?EIO=4&transport=polling"),
                Bytes::new(),
            )
            .await?;
        let open = std::str::from_utf8(&open)?;
        let hs: Value = serde_json::from_str(
            open.strip_prefix('0')
                .ok_or_else(|| anyhow!("no OPEN: {open}"))?,
        )?;
        let sid = hs["sid"]
            .as_str()
            .ok_or_else(|| anyhow!("no sid: {open}"))?;
        let mut s = Session {
            uri: format!("{path}?EIO=4&transport=polling&sid={sid}"),
            get,
            post: Http::new(addr),
        };
        s.send(&["40".into()]).await?;
        s.wait_for("40").await?;
        if let Some(room) = room {
            s.send(&[format!("420[\"join\",{}]", Value::from(room))])
                .await?;
            s.wait_for("430").await?;
        }
        Ok(s)
    }
}

#[derive(Default)]
struct Stats {
    recv_total: AtomicU64,
    recv_in_window: AtomicU64,
    /// Distinct messages received whose send time is inside the window (for the loss).
    recv_of_window_sent: AtomicU64,
    dup: AtomicU64,
    parse_fail: AtomicU64,
    errors: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

/// `42["tick","<seq>:<t_ns>:<pad>"(,"<offset>")]` -> (seq, t_ns).
fn parse_tick(p: &str) -> Option<(u64, u64)> {
    let v: Value = serde_json::from_str(p.strip_prefix("42")?).ok()?;
    let s = v.get(1)?.as_str()?;
    let mut it = s.splitn(3, ':');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn cpu_s(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s[s.rfind(')')? + 2..].split_whitespace().collect();
    // utime, stime in clock ticks (USER_HZ, 100 on Linux).
    Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn self_cpu_s() -> f64 {
    cpu_s(std::process::id()).unwrap_or(0.0)
}

fn pct(sorted: &[u64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(sorted[i] as f64 / 1000.0)
}

fn main() -> Result<()> {
    let _ = now_ns();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(run(&cli))?;
    let mut out = out;
    out.insert("label".into(), cli.label.clone().into());
    out.insert("addr".into(), cli.addr.clone().into());
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
    let addr: Arc<str> = cli.addr.as_str().into();
    let sem = Arc::new(Semaphore::new(cli.connect_concurrency.max(1)));
    let t_conn = Instant::now();
    let mut opens = Vec::with_capacity(cli.clients);
    for _ in 0..cli.clients {
        let (addr, path, room, sem) = (
            addr.clone(),
            cli.path.clone(),
            cli.room.clone(),
            sem.clone(),
        );
        opens.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            Session::open(addr, &path, Some(&room)).await
        }));
    }
    let (mut sessions, mut failed, mut first_err) = (Vec::new(), 0u64, None);
    for h in opens {
        match h.await? {
            Ok(s) => sessions.push(s),
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(format!("{e:#}"));
            }
        }
    }
    if let Some(e) = first_err {
        eprintln!(
            "pollload: {failed}/{} sessions failed; first error: {e}",
            cli.clients
        );
    }
    let n_recv = sessions.len() as u64;
    if n_recv == 0 {
        bail!("no receiver joined");
    }
    eprintln!(
        "pollload: {n_recv} polling receivers joined '{}' in {:.2}s",
        cli.room,
        t_conn.elapsed().as_secs_f64()
    );
    let mut sender = Session::open(addr.clone(), &cli.path, None).await?;
    let st = Arc::new(Stats::default());
    let warm_end = now_ns() + (cli.warmup_s * 1e9) as u64;
    let end = warm_end + (cli.duration_s * 1e9) as u64;
    for mut s in sessions {
        let st = st.clone();
        tokio::spawn(async move {
            let mut seen: Vec<bool> = Vec::new();
            let mut lat = Vec::new();
            let r: Result<()> = async {
                loop {
                    let packets = s.poll().await?;
                    let now = now_ns();
                    for p in packets {
                        if p == "2" {
                            s.send(&["3".into()]).await?;
                            continue;
                        }
                        if p == "1" || p.starts_with("41") {
                            bail!("server closed the session");
                        }
                        if !p.starts_with("42") {
                            continue;
                        }
                        st.recv_total.fetch_add(1, Relaxed);
                        if now >= warm_end && now < end {
                            st.recv_in_window.fetch_add(1, Relaxed);
                        }
                        let Some((seq, t)) = parse_tick(&p) else {
                            st.parse_fail.fetch_add(1, Relaxed);
                            continue;
                        };
                        let i = seq as usize;
                        if seen.len() <= i {
                            seen.resize(i + 1, false);
                        }
                        if seen[i] {
                            st.dup.fetch_add(1, Relaxed);
                            continue;
                        }
                        seen[i] = true;
                        if t >= warm_end && t < end {
                            st.recv_of_window_sent.fetch_add(1, Relaxed);
                            lat.push(now.saturating_sub(t) / 1000);
                            if lat.len() >= 256 {
                                st.latencies_us
                                    .lock()
                                    .map_err(|_| anyhow!("poisoned"))?
                                    .append(&mut lat);
                            }
                        }
                    }
                    if let Ok(mut l) = st.latencies_us.lock() {
                        l.append(&mut lat);
                    }
                }
            }
            .await;
            if let Err(e) = r {
                if st.errors.fetch_add(1, Relaxed) == 0 {
                    eprintln!("pollload: receiver error: {e:#}");
                }
            }
        });
    }
    // The sender: its GET loop hands pings to the POST loop (one POST in flight per session).
    let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<()>();
    let mut sender_get = Session {
        uri: sender.uri.clone(),
        get: std::mem::replace(&mut sender.get, Http::new(addr.clone())),
        post: Http::new(addr.clone()),
    };
    tokio::spawn(async move {
        while let Ok(packets) = sender_get.poll().await {
            for p in packets {
                if p == "2" && pong_tx.send(()).is_err() {
                    return;
                }
            }
        }
    });
    let sent_window = Arc::new(AtomicU64::new(0));
    let sent_total = Arc::new(AtomicU64::new(0));
    let sender_task = {
        let (sent_window, sent_total) = (sent_window.clone(), sent_total.clone());
        let (rate, pad, room) = (
            cli.rate,
            "x".repeat(cli.size),
            Value::from(cli.room.as_str()).to_string(),
        );
        tokio::spawn(async move {
            let t0 = now_ns();
            let mut seq: u64 = 0;
            let mut iv = tokio::time::interval(Duration::from_millis(1));
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                iv.tick().await;
                let now = now_ns();
                if now >= end {
                    break;
                }
                let due = ((now - t0) as f64 / 1e9 * rate) as u64;
                let mut batch = Vec::new();
                while pong_rx.try_recv().is_ok() {
                    batch.push("3".to_owned());
                }
                while seq < due {
                    let t = now_ns();
                    batch.push(format!("42[\"broadcast\",{room},\"{seq}:{t}:{pad}\"]"));
                    seq += 1;
                    sent_total.fetch_add(1, Relaxed);
                    if t >= warm_end && t < end {
                        sent_window.fetch_add(1, Relaxed);
                    }
                }
                if !batch.is_empty() {
                    sender.send(&batch).await?;
                }
            }
            anyhow::Ok(())
        })
    };
    let sleep_until = |t: u64| {
        let now = now_ns();
        tokio::time::sleep(Duration::from_nanos(t.saturating_sub(now)))
    };
    sleep_until(warm_end).await;
    let (cpu0, me0, w0) = (cli.server_pid.and_then(cpu_s), self_cpu_s(), Instant::now());
    sleep_until(end).await;
    let (cpu1, me1, wall) = (
        cli.server_pid.and_then(cpu_s),
        self_cpu_s(),
        w0.elapsed().as_secs_f64(),
    );
    let in_window = st.recv_in_window.load(Relaxed);
    sender_task.await??;
    let expected = sent_window.load(Relaxed) * n_recv;
    let drain = Instant::now() + Duration::from_secs_f64(cli.drain_s);
    while st.recv_of_window_sent.load(Relaxed) < expected && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = st.recv_of_window_sent.load(Relaxed);
    let mut lat = std::mem::take(&mut *st.latencies_us.lock().map_err(|_| anyhow!("poisoned"))?);
    lat.sort_unstable();
    let delivered = in_window as f64 / cli.duration_s;
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let mut m = Map::new();
    m.insert("scenario".into(), "polling-fanout".into());
    m.insert("transport".into(), "polling".into());
    m.insert("clients".into(), n_recv.into());
    m.insert("failed".into(), failed.into());
    m.insert("rate".into(), cli.rate.into());
    m.insert("size".into(), cli.size.into());
    m.insert("duration_s".into(), cli.duration_s.into());
    m.insert("sent_total".into(), sent_total.load(Relaxed).into());
    m.insert("sent_in_window".into(), sent_window.load(Relaxed).into());
    m.insert(
        "target_msgs_per_s".into(),
        r3(cli.rate * n_recv as f64).into(),
    );
    m.insert("delivered_per_s".into(), r3(delivered).into());
    m.insert(
        "delivered_ratio".into(),
        r3(delivered / (cli.rate * n_recv as f64)).into(),
    );
    m.insert("expected".into(), expected.into());
    m.insert("received".into(), got.into());
    m.insert("lost".into(), expected.saturating_sub(got).into());
    m.insert("dup".into(), st.dup.load(Relaxed).into());
    m.insert("parse_fail".into(), st.parse_fail.load(Relaxed).into());
    m.insert("conn_errors".into(), st.errors.load(Relaxed).into());
    m.insert("p50_ms".into(), pct(&lat, 0.5).into());
    m.insert("p99_ms".into(), pct(&lat, 0.99).into());
    m.insert("max_ms".into(), pct(&lat, 1.0).into());
    m.insert(
        "loadgen_cpu_pct".into(),
        r3((me1 - me0) / wall * 100.0).into(),
    );
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        m.insert("server_cpu_pct".into(), r3((b - a) / wall * 100.0).into());
        if in_window > 0 {
            m.insert(
                "server_cpu_us_per_msg".into(),
                r3((b - a) * 1e6 / in_window as f64).into(),
            );
        }
    }
    if let Some(pid) = cli.server_pid {
        m.insert("server_pid".into(), pid.into());
        m.insert("rss_kb".into(), rss_kb(pid).into());
    }
    Ok(m)
}
