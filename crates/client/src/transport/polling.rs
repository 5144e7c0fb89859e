//! The polling transport: hyper's HTTP client (over TCP or TLS, with the cookie jar),
//! the handshake `GET`, and the loop of long-polling `GET`s that feeds the connection
//! task. The connection task batches outgoing packets into `POST`s with [`Http`].

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tether_proto::engine::{self as eio, Packet, PayloadItem};
use tokio::sync::{mpsc, watch};

use super::{
    bad_handshake, cookie_header, http_error, store_cookies, CookieJar, EngineOptions, Frame,
    Handshake, TEvent, TaskGuard,
};
use crate::error::{Error, Result};

type HyperClient<C> = hyper_util::client::legacy::Client<C, Full<Bytes>>;

/// hyper's client, over TCP or TLS.
#[derive(Clone)]
enum HttpClient {
    Plain(HyperClient<HttpConnector>),
    Tls(HyperClient<hyper_rustls::HttpsConnector<HttpConnector>>),
}

/// The HTTP client of the polling transport.
#[derive(Clone)]
pub(super) struct Http {
    client: HttpClient,
    headers: http::HeaderMap,
    cookies: Option<CookieJar>,
}

impl Http {
    pub(super) fn new(
        headers: http::HeaderMap,
        tls: Option<&Arc<rustls::ClientConfig>>,
        cookies: Option<CookieJar>,
    ) -> Self {
        let builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
        let client = match tls {
            None => HttpClient::Plain(builder.build_http()),
            Some(cfg) => {
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                let mut cfg = (**cfg).clone();
                // hyper-rustls sets the ALPN itself (HTTP/1.1 only).
                cfg.alpn_protocols.clear();
                let conn = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(cfg)
                    .https_only()
                    .enable_http1()
                    .wrap_connector(http);
                HttpClient::Tls(builder.build(conn))
            }
        };
        Http {
            client,
            headers,
            cookies,
        }
    }

    pub(super) async fn request(
        &self,
        method: http::Method,
        url: &str,
        body: Option<String>,
    ) -> Result<String> {
        let mut req = http::Request::builder().method(method).uri(url);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "text/plain;charset=UTF-8");
        }
        if let Some(c) = self.cookies.as_ref().and_then(|j| cookie_header(j, url)) {
            req = req.header(http::header::COOKIE, c);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::Config(e.to_string()))?;
        let resp = match &self.client {
            HttpClient::Plain(c) => c.request(req).await,
            HttpClient::Tls(c) => c.request(req).await,
        }
        .map_err(Error::transport)?;
        if let Some(jar) = &self.cookies {
            store_cookies(jar, url, resp.headers());
        }
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(Error::transport)?
            .to_bytes();
        if !status.is_success() {
            return Err(http_error(status.as_u16(), &body));
        }
        String::from_utf8(body.to_vec())
            .map_err(|_| Error::Protocol("polling response is not UTF-8".into()))
    }
}

/// Opens a polling connection: the handshake `GET`, then the loop of `GET`s (its task
/// goes in `guard`; setting the returned flag pauses it, for the upgrade). Returns the
/// handshake, the flag, and what followed the open packet in the first response (handled
/// once the connection task runs).
pub(super) async fn open(
    opts: &EngineOptions,
    http: &Http,
    t_tx: &mpsc::UnboundedSender<TEvent>,
    guard: &mut TaskGuard,
) -> Result<(Handshake, watch::Sender<bool>, Vec<String>)> {
    let body = http
        .request(http::Method::GET, &opts.endpoint.polling_url(None), None)
        .await?;
    let mut items = eio::decode_payload(&body);
    let hs = match items.next() {
        Some(Ok(PayloadItem::Packet(Packet::Open(data)))) => Handshake::parse(data)?,
        _ => return Err(bad_handshake(&body)),
    };
    // Anything after the open packet is handled once the task runs.
    let rest: Vec<String> = body
        .split_once(eio::SEPARATOR)
        .map(|(_, rest)| vec![rest.to_owned()])
        .unwrap_or_default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let url = opts.endpoint.polling_url(Some(&hs.sid));
    guard.0.push(tokio::spawn(poll_loop(
        http.clone(),
        url,
        t_tx.clone(),
        stop_rx,
    )));
    Ok((hs, stop_tx, rest))
}

async fn poll_loop(
    http: Http,
    url: String,
    tx: mpsc::UnboundedSender<TEvent>,
    stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            let _ = tx.send(TEvent::PollPaused);
            return;
        }
        match http.request(http::Method::GET, &url, None).await {
            Ok(body) => {
                if tx.send(TEvent::PollBody(body)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(TEvent::PollError(e));
                return;
            }
        }
    }
}

/// Takes frames off the front of `queue` into one polling payload (the body of a `POST`)
/// of at most `max` bytes, but at least one frame; `usize::MAX` takes them all.
pub(super) fn take_payload(queue: &mut VecDeque<Frame>, max: usize) -> String {
    let mut body = String::new();
    let mut size: usize = 0;
    while let Some(f) = queue.front() {
        let len = f.polling_len() + usize::from(size > 0);
        if size > 0 && size.saturating_add(len) > max {
            break;
        }
        size = size.saturating_add(len);
        if !body.is_empty() {
            body.push(eio::SEPARATOR);
        }
        match queue.pop_front() {
            Some(Frame::Text(s)) => body.push_str(&s),
            Some(Frame::Binary(b)) => eio::encode_binary_into(&b, &mut body),
            None => break,
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> VecDeque<Frame> {
        VecDeque::from([
            Frame::Text("4hello".into()),
            Frame::Binary(Bytes::from_static(&[1, 2, 3])),
            Frame::Text("2".into()),
        ])
    }

    #[test]
    fn payloads_stay_within_max_payload() {
        // "4hello" (6) + separator + "bAQID" (5) = 12; + separator + "2" = 14.
        let mut q = queue();
        assert_eq!(take_payload(&mut q, 12), "4hello\x1ebAQID");
        assert_eq!(q.len(), 1);
        assert_eq!(take_payload(&mut q, 12), "2");
        assert!(q.is_empty());
        assert_eq!(take_payload(&mut q, 12), "");
        // A frame larger than the limit still goes, alone.
        let mut q = queue();
        assert_eq!(take_payload(&mut q, 1), "4hello");
        let mut q = queue();
        assert_eq!(take_payload(&mut q, usize::MAX), "4hello\x1ebAQID\x1e2");
        assert!(q.is_empty());
    }
}
