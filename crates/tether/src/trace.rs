//! Per-socket tracing: every socket has a span, `socket`, with its `sid`, `nsp`,
//! `transport` (at connection), `node` (the cluster uid, when in a cluster), `pid` (its
//! first characters only, as `recovery::redact` gives) and `recovered`.
//!
//! The span is entered around the socket's middlewares, connection handler, replay on
//! recovery, event handlers and disconnect handlers, and it is the parent of the
//! `connected` and `disconnected` events. A restored socket has the same `sid`, so a
//! filter on one sid shows its whole life, recoveries included:
//!
//! ```text
//! RUST_LOG='warn,[socket{sid=Yq3vmTbAn2ZxMcP0AAAB}]=trace'
//! ```

use tracing::Span;

use crate::recovery;

/// The span of a new socket of the namespace `nsp`, on the cluster node `node` if any.
pub(crate) fn socket_span(
    nsp: &str,
    node: Option<&str>,
    sid: tether_engine::Sid,
    pid: Option<&str>,
    transport: tether_engine::Transport,
    recovered: bool,
) -> Span {
    tracing::info_span!(
        "socket",
        sid = %sid,
        nsp,
        transport = transport.as_str(),
        node,
        pid = pid.map(recovery::redact),
        recovered,
    )
}
