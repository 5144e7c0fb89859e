//! The WebSocket transport: the connection (over TCP or TLS, with the cookie jar), the
//! handshake of a WebSocket-only connection, the upgrade probe, and the reader and writer
//! tasks. One text frame per text packet, one binary frame per binary message.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tether_proto::engine::Packet;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::{
    bad_handshake, cookie_header, http_error, store_cookies, EngineOptions, Handshake, TEvent,
    TaskGuard,
};
use crate::error::{Error, Result};
use crate::tls;

/// A WebSocket over TCP or TLS.
pub(super) type Ws = WebSocketStream<tls::Stream>;

async fn connect_ws(opts: &EngineOptions, sid: Option<&str>) -> Result<Ws> {
    let url = opts.endpoint.ws_url(sid);
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| Error::Config(format!("invalid WebSocket URL {url:?}: {e}")))?;
    for (k, v) in &opts.headers {
        req.headers_mut().append(k, v.clone());
    }
    if let Some(c) = opts.cookies.as_ref().and_then(|j| cookie_header(j, &url)) {
        req.headers_mut().append(http::header::COOKIE, c);
    }
    let (host, port) = opts.endpoint.host_port()?;
    let stream = tls::connect(&host, port, opts.tls.as_ref()).await?;
    match tokio_tungstenite::client_async(req, stream).await {
        Ok((ws, resp)) => {
            if let Some(jar) = &opts.cookies {
                store_cookies(jar, &url, resp.headers());
            }
            Ok(ws)
        }
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            Err(http_error(resp.status().as_u16(), &body))
        }
        Err(e) => Err(Error::transport(e)),
    }
}

/// Opens a WebSocket-only connection and reads the server's open packet.
pub(super) async fn open(opts: &EngineOptions) -> Result<(Handshake, Ws)> {
    let mut ws = connect_ws(opts, None).await?;
    let hs = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match Packet::decode(t.as_str()) {
                Ok(Packet::Open(data)) => break Handshake::parse(data)?,
                _ => return Err(bad_handshake(t.as_str())),
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => {
                return Err(Error::Protocol(format!(
                    "expected an Engine.IO open packet, got {other:?}"
                )))
            }
            Some(Err(e)) => return Err(Error::transport(e)),
            None => return Err(Error::transport_msg("WebSocket closed during handshake")),
        }
    };
    Ok((hs, ws))
}

/// Opens a WebSocket with the session id and checks that the server answers the probe.
pub(super) async fn probe(opts: &EngineOptions, sid: &str) -> Result<Ws> {
    let fut = async {
        let mut ws = connect_ws(opts, Some(sid)).await?;
        ws.send(Message::text("2probe"))
            .await
            .map_err(Error::transport)?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str() == "3probe" => return Ok(ws),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => {
                    return Err(Error::Protocol(format!(
                        "unexpected probe answer {other:?}"
                    )))
                }
                Some(Err(e)) => return Err(Error::transport(e)),
                None => return Err(Error::transport_msg("WebSocket closed during the probe")),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| Error::Timeout)?
}

/// Starts the reader and the writer of `ws` (their tasks go in `guard`): the reader feeds
/// the connection task, the writer sends what the returned channel gets.
pub(super) fn start(
    ws: Ws,
    t_tx: &mpsc::UnboundedSender<TEvent>,
    guard: &mut TaskGuard,
) -> mpsc::UnboundedSender<Message> {
    let (mut sink, mut stream) = ws.split();
    let tx = t_tx.clone();
    guard.0.push(tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let ev = match msg {
                // A message packet (`4...`, nearly every frame) is copied once, without
                // its type.
                Ok(Message::Text(t)) => match t.as_str().strip_prefix('4') {
                    Some(m) => TEvent::WsMessage(m.to_owned()),
                    None => TEvent::WsText(t.as_str().to_owned()),
                },
                Ok(Message::Binary(b)) => TEvent::WsBinary(b),
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(TEvent::WsError(Error::transport(e)));
                    return;
                }
            };
            if tx.send(ev).is_err() {
                return;
            }
        }
        let _ = tx.send(TEvent::WsClosed);
    }));
    let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
    let tx = t_tx.clone();
    guard.0.push(tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let closing = matches!(msg, Message::Close(_));
            // Feed everything that is ready, then flush once.
            let mut r = sink.feed(msg).await;
            while r.is_ok() {
                match out_rx.try_recv() {
                    Ok(m) => r = sink.feed(m).await,
                    Err(_) => break,
                }
            }
            if r.is_ok() {
                r = sink.flush().await;
            }
            if let Err(e) = r {
                let _ = tx.send(TEvent::WsError(Error::transport(e)));
                return;
            }
            if closing {
                return;
            }
        }
    }));
    out
}
