//! `tether-cli`: a Socket.IO command-line client, for debugging servers.
//!
//! It connects to a URL, prints every event and lifecycle change as one JSON line on
//! stdout, and emits the events read from stdin, one per line: `event [json-args]`, where
//! `json-args` is a JSON array of arguments (or a single JSON value, one argument).
//! A line `?event [json-args]` emits with an acknowledgement and prints the answer.
//! Run `tether-cli --help` for the options.

use std::time::Duration;

use base64::Engine as _;
use tether_client::{Client, ClientBuilder, Event, Lifecycle, Payload, Reconnection, Transport};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;

const USAGE: &str = "\
usage: tether-cli URL [options]

Connects to a Socket.IO server (http://, https://, ws:// or wss://), prints every event as a JSON line,
and emits the events read from stdin, one per line:

    event [json-args]      emit (json-args: a JSON array of arguments, or one JSON value)
    ?event [json-args]     emit with an acknowledgement, and print the answer

options:
    -n, --namespace NSP    namespace to connect (default: the URL's path, else /)
    -a, --auth JSON        auth data (a JSON object)
    -t, --transport T      polling, websocket, or upgrade (default: upgrade)
    -j, --join ROOM        emit `join ROOM` once connected (repeatable; the server must
                           handle a `join` event)
    -H, --header K:V       extra HTTP header (repeatable)
    -q, --query K=V        extra query parameter (repeatable)
        --path PATH        Engine.IO path (default /socket.io/)
        --no-reconnect     do not reconnect
        --retry-first      retry the first connection too (under the reconnection policy)
        --ca FILE          trust the root certificates of this PEM file (default: the
                           platform's roots)
        --cookies          keep and send back cookies (sticky load balancers)
        --ack-timeout SECS timeout of `?event` lines (default 10)
        --linger SECS      after the end of stdin, wait this long before closing
                           (default 1; negative: wait until interrupted)
    -h, --help             this text

Output lines: {\"type\":\"event\",...}, {\"type\":\"ack\",...}, {\"type\":\"connect\",...},
{\"type\":\"disconnect\",...}, {\"type\":\"reconnect_attempt\",...}, {\"type\":\"error\",...}.
Logs go to stderr (RUST_LOG=tether_client=debug for more).";

struct Args {
    url: String,
    namespace: Option<String>,
    auth: Option<serde_json::Value>,
    transports: Vec<Transport>,
    join: Vec<String>,
    headers: Vec<(String, String)>,
    query: Vec<(String, String)>,
    path: Option<String>,
    reconnect: bool,
    retry_first: bool,
    ca: Option<String>,
    cookies: bool,
    ack_timeout: Duration,
    linger: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut url = None;
    let mut a = Args {
        url: String::new(),
        namespace: None,
        auth: None,
        transports: vec![Transport::Polling, Transport::Websocket],
        join: Vec::new(),
        headers: Vec::new(),
        query: Vec::new(),
        path: None,
        reconnect: true,
        retry_first: false,
        ca: None,
        cookies: false,
        ack_timeout: Duration::from_secs(10),
        linger: 1.0,
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "-n" | "--namespace" => a.namespace = Some(value(&arg)?),
            "-a" | "--auth" => {
                let v = value(&arg)?;
                a.auth = Some(serde_json::from_str(&v).map_err(|e| format!("--auth: {e}"))?);
            }
            "-t" | "--transport" => {
                a.transports = match value(&arg)?.as_str() {
                    "polling" => vec![Transport::Polling],
                    "websocket" => vec![Transport::Websocket],
                    "upgrade" => vec![Transport::Polling, Transport::Websocket],
                    other => return Err(format!("unknown transport {other:?}")),
                }
            }
            "-j" | "--join" => a.join.push(value(&arg)?),
            "-H" | "--header" => {
                let v = value(&arg)?;
                let (k, val) = v.split_once(':').ok_or("--header wants K:V")?;
                a.headers.push((k.trim().to_owned(), val.trim().to_owned()));
            }
            "-q" | "--query" => {
                let v = value(&arg)?;
                let (k, val) = v.split_once('=').ok_or("--query wants K=V")?;
                a.query.push((k.to_owned(), val.to_owned()));
            }
            "--path" => a.path = Some(value(&arg)?),
            "--no-reconnect" => a.reconnect = false,
            "--retry-first" => a.retry_first = true,
            "--ca" => a.ca = Some(value(&arg)?),
            "--cookies" => a.cookies = true,
            "--ack-timeout" => {
                let v: f64 = value(&arg)?
                    .parse()
                    .map_err(|_| "--ack-timeout: a number")?;
                a.ack_timeout = Duration::from_secs_f64(v.max(0.0));
            }
            "--linger" => a.linger = value(&arg)?.parse().map_err(|_| "--linger: a number")?,
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => {
                if url.replace(s.to_owned()).is_some() {
                    return Err("only one URL".into());
                }
            }
        }
    }
    a.url = url.ok_or("missing URL")?;
    Ok(a)
}

/// Prints one JSON line.
fn out(v: serde_json::Value) {
    println!("{v}");
}

fn b64(p: &Payload) -> Vec<String> {
    p.attachments
        .iter()
        .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
        .collect()
}

fn print_event(c: &Client, ev: &Event) {
    out(serde_json::json!({
        "type": "event",
        "nsp": c.namespace(),
        "event": ev.name,
        "args": ev.payload.args,
        "attachments": b64(&ev.payload),
        "ack_requested": ev.ack.is_some(),
    }));
}

/// Whether this lifecycle event means that the client is closed for good.
fn print_lifecycle(c: &Client, l: &Lifecycle) -> bool {
    let nsp = c.namespace();
    let (v, closed) = match l {
        Lifecycle::Connect { recovered } => (
            serde_json::json!({"type": "connect", "nsp": nsp, "id": c.id(), "recovered": recovered,
                "transport": c.transport().map(Transport::as_str)}),
            false,
        ),
        Lifecycle::ConnectError(e) => (
            serde_json::json!({"type": "connect_error", "nsp": nsp, "error": e.to_string(),
                "data": e.connect_error_data()}),
            true,
        ),
        Lifecycle::Disconnect(r) => (
            serde_json::json!({"type": "disconnect", "nsp": nsp, "reason": r.as_str()}),
            !r.will_reconnect(),
        ),
        Lifecycle::ReconnectAttempt(n) => (
            serde_json::json!({"type": "reconnect_attempt", "attempt": n}),
            false,
        ),
        Lifecycle::Reconnect(n) => (
            serde_json::json!({"type": "reconnect", "attempt": n}),
            false,
        ),
        Lifecycle::ReconnectError(e) => (
            serde_json::json!({"type": "reconnect_error", "error": e.to_string()}),
            false,
        ),
        Lifecycle::ReconnectFailed => (serde_json::json!({"type": "reconnect_failed"}), true),
        other => (
            serde_json::json!({"type": "lifecycle", "debug": format!("{other:?}")}),
            false,
        ),
    };
    out(v);
    closed
}

/// Parses `event [json-args]`.
fn parse_line(line: &str) -> Result<(bool, String, Payload), String> {
    let line = line.trim();
    let (with_ack, line) = match line.strip_prefix('?') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, line),
    };
    let (event, rest) = match line.split_once(char::is_whitespace) {
        Some((e, r)) => (e, r.trim()),
        None => (line, ""),
    };
    if event.is_empty() {
        return Err("missing event name".into());
    }
    let payload = if rest.is_empty() {
        Payload::new()
    } else {
        match serde_json::from_str(rest).map_err(|e| format!("arguments: {e}"))? {
            serde_json::Value::Array(args) => Payload::from(args),
            v => Payload::from(v),
        }
    };
    Ok((with_ack, event.to_owned(), payload))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tether-cli: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<()>();
    let mut b = ClientBuilder::new(&args.url)
        .transports(args.transports.clone())
        .on_any(|c, ev| print_event(&c, &ev))
        .on_lifecycle(move |c, l| {
            if print_lifecycle(&c, &l) {
                let _ = closed_tx.send(());
            }
        });
    if !args.reconnect {
        b = b.reconnection(Reconnection::disabled());
    }
    if let Some(n) = &args.namespace {
        b = b.namespace(n);
    }
    if let Some(ca) = &args.ca {
        match std::fs::read(ca) {
            Ok(pem) => b = b.tls_root_certificates_pem(pem),
            Err(e) => {
                eprintln!("tether-cli: --ca {ca}: {e}");
                std::process::exit(2);
            }
        }
    }
    b = b
        .cookies(args.cookies)
        .retry_first_connection(args.retry_first);
    if let Some(auth) = args.auth.clone() {
        b = b.auth(auth);
    }
    if let Some(p) = &args.path {
        b = b.path(p);
    }
    for (k, v) in &args.headers {
        b = b.header(k, v);
    }
    for (k, v) in &args.query {
        b = b.query(k, v);
    }
    let client = match b.connect().await {
        Ok(c) => c,
        Err(e) => {
            out(serde_json::json!({"type": "error", "error": e.to_string(),
                "data": e.connect_error_data()}));
            std::process::exit(1);
        }
    };
    for room in &args.join {
        if let Err(e) = client.emit("join", serde_json::json!(room)) {
            out(serde_json::json!({"type": "error", "error": e.to_string()}));
        }
    }

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut acks = tokio::task::JoinSet::new();
    let mut stdin_open = true;
    let code = loop {
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) if line.trim().is_empty() => {}
                Ok(Some(line)) => match parse_line(&line) {
                    Ok((false, event, payload)) => {
                        if let Err(e) = client.emit(&event, payload) {
                            out(serde_json::json!({"type": "error", "error": e.to_string()}));
                        }
                    }
                    Ok((true, event, payload)) => {
                        let c = client.clone();
                        let timeout = args.ack_timeout;
                        acks.spawn(async move {
                            match c.emit_with_ack(&event, payload, timeout).await {
                                Ok(p) => out(serde_json::json!({"type": "ack", "event": event,
                                    "args": p.args, "attachments": b64(&p)})),
                                Err(e) => out(serde_json::json!({"type": "error", "event": event,
                                    "error": e.to_string()})),
                            }
                        });
                    }
                    Err(e) => out(serde_json::json!({"type": "error", "error": e, "line": line})),
                },
                Ok(None) | Err(_) => {
                    stdin_open = false;
                    while acks.join_next().await.is_some() {}
                    if args.linger >= 0.0 {
                        tokio::time::sleep(Duration::from_secs_f64(args.linger)).await;
                        break 0;
                    }
                }
            },
            _ = closed_rx.recv() => break 1,
            _ = tokio::signal::ctrl_c() => break 0,
        }
    };
    client.close().await;
    std::process::exit(code);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines() {
        let (ack, ev, p) = parse_line("chat [1, \"a\"]").unwrap();
        assert!(!ack);
        assert_eq!(ev, "chat");
        assert_eq!(p.args, vec![json!(1), json!("a")]);
        let (ack, ev, p) = parse_line("?sum {\"a\":1}").unwrap();
        assert!(ack);
        assert_eq!(ev, "sum");
        assert_eq!(p.args, vec![json!({"a": 1})]);
        let (_, ev, p) = parse_line("  ping  ").unwrap();
        assert_eq!(ev, "ping");
        assert!(p.args.is_empty());
        assert!(parse_line("ev [1").is_err());
        assert!(parse_line("?").is_err());
    }
}
