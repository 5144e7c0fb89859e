//! Codec micro-benchmarks: decode and encode of typical Socket.IO EVENT packets, and of an
//! Engine.IO long-polling payload.
//!
//! ```sh
//! cargo bench -p tether-proto --bench codec -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use tether_proto::engine::{self, decode_payload, PayloadItem, SEPARATOR};
use tether_proto::sio::{self, count_placeholders, Packet};

/// A 64-character event argument.
const ARG: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";

/// The Socket.IO packets (without the Engine.IO `4` prefix) that the benches decode.
fn sio_cases() -> Vec<(&'static str, String)> {
    vec![
        ("event_small", format!(r#"2["tick","{ARG}"]"#)),
        ("event_nsp_ack", format!(r#"2/chat,12["tick","{ARG}"]"#)),
        (
            "binary_event_header",
            format!(r#"51-/chat,12["upload","{ARG}",{{"_placeholder":true,"num":0}}]"#),
        ),
    ]
}

/// An Engine.IO polling payload of 10 `42["tick",...]` messages.
fn polling_payload() -> String {
    let mut body = String::new();
    for i in 0..10 {
        if i > 0 {
            body.push(SEPARATOR);
        }
        engine::Packet::Message(&format!(r#"2["tick","{ARG}",{i}]"#)).encode_into(&mut body);
    }
    body
}

fn sio_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("sio_decode");
    for (name, text) in sio_cases() {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &text, |b, text| {
            b.iter(|| {
                let p = Packet::decode(black_box(text)).expect("valid packet");
                if p.ty.is_binary() {
                    let data = p.data.as_ref().expect("binary packets carry data");
                    black_box(count_placeholders(data, p.attachments).expect("placeholders"));
                }
                p
            })
        });
    }
    g.finish();
}

fn sio_decode_header(c: &mut Criterion) {
    let mut g = c.benchmark_group("sio_decode_header");
    for (name, text) in sio_cases() {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &text, |b, text| {
            b.iter(|| sio::decode_header(black_box(text)).expect("valid header").3)
        });
    }
    g.finish();
}

fn sio_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("sio_encode");
    for (name, text) in sio_cases() {
        let packet = Packet::decode(&text).expect("valid packet");
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &packet, |b, p| {
            b.iter(|| black_box(p).encode())
        });
    }
    g.finish();
}

/// What a server does with one WebSocket text frame: Engine.IO, then Socket.IO.
fn stack_decode(c: &mut Criterion) {
    let frame = format!(r#"42["tick","{ARG}"]"#);
    let mut g = c.benchmark_group("stack_decode");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("ws_frame_event_small", |b| {
        b.iter(|| match engine::Packet::decode(black_box(&frame)) {
            Ok(engine::Packet::Message(m)) => Packet::decode(m).expect("valid packet"),
            other => panic!("not a message: {other:?}"),
        })
    });
    g.finish();
}

fn engine_payload(c: &mut Criterion) {
    let body = polling_payload();
    let mut g = c.benchmark_group("engine_payload_10");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| {
            decode_payload(black_box(&body))
                .collect::<Result<Vec<_>, _>>()
                .expect("valid payload")
        })
    });
    g.bench_function("decode_then_sio_decode", |b| {
        b.iter(|| {
            decode_payload(black_box(&body))
                .map(|item| match item.expect("valid item") {
                    PayloadItem::Packet(engine::Packet::Message(m)) => {
                        Packet::decode(m).expect("valid packet")
                    }
                    other => panic!("not a message: {other:?}"),
                })
                .collect::<Vec<_>>()
        })
    });
    let messages: Vec<String> = (0..10)
        .map(|i| format!(r#"2["tick","{ARG}",{i}]"#))
        .collect();
    g.bench_function("encode", |b| {
        b.iter(|| {
            let mut out = String::with_capacity(body.len());
            for (i, m) in black_box(&messages).iter().enumerate() {
                if i > 0 {
                    out.push(SEPARATOR);
                }
                engine::Packet::Message(m).encode_into(&mut out);
            }
            out
        })
    });
    g.finish();
}

/// `criterion_group!` makes a `pub fn`; kept in a private module so it needs no docs.
mod group {
    criterion::criterion_group!(
        benches,
        super::sio_decode,
        super::sio_decode_header,
        super::sio_encode,
        super::stack_decode,
        super::engine_payload
    );
}
criterion_main!(group::benches);
