//! Encode throughput: `Format::Line` and `Format::Jsonrpc` for events whose line encoding is
//! 64 B, 1 KiB and 65 457 B (the datagram ceiling). Goal: >= 10 million 64-byte events/s on
//! one thread.
//!
//! `cargo bench --bench encode -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use event_datagram::{Format, Params, MAX_DATAGRAM};

const EVENT: &str = "E_PIKE_BLOCKED";

/// Params whose line encoding of [`EVENT`] is exactly `size` bytes: a realistic head
/// (`ip`, `attempts`) and a padding string that makes up the rest.
fn params_of_line_size(size: usize) -> Params {
    let head = Params::new()
        .str("ip", "192.168.2.11")
        .unwrap()
        .int("attempts", 3)
        .unwrap();
    let head_len = encoded_len(Format::Line, &head);
    // `pad::` + value + `\n`
    let pad = size - head_len - "pad::\n".len();
    let value = "x".repeat(pad);
    let mut params = head;
    params
        .push(Some("pad"), event_datagram::ValueRef::Str(&value))
        .unwrap();
    assert_eq!(
        encoded_len(Format::Line, &params),
        size,
        "line encoding of the {size}-byte case"
    );
    params
}

fn encoded_len(format: Format, params: &Params) -> usize {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    format.encode(EVENT, params, &mut buf).unwrap()
}

fn bench_encode(c: &mut Criterion) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for (label, size) in [("64B", 64), ("1KiB", 1024), ("65457B", MAX_DATAGRAM)] {
        let params = params_of_line_size(size);
        let mut group = c.benchmark_group(format!("encode/{label}"));
        for format in Format::ALL {
            let len = encoded_len(format, &params);
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_with_input(BenchmarkId::new("bytes", format), &params, |b, p| {
                b.iter(|| {
                    format
                        .encode(black_box(EVENT), black_box(p), black_box(&mut buf[..]))
                        .unwrap()
                })
            });
        }
        group.finish();
    }

    // The same 64-byte event, counted in events per second.
    let params = params_of_line_size(64);
    let mut group = c.benchmark_group("encode/64B-events");
    group.throughput(Throughput::Elements(1));
    for format in Format::ALL {
        group.bench_with_input(BenchmarkId::new("events", format), &params, |b, p| {
            b.iter(|| {
                format
                    .encode(black_box(EVENT), black_box(p), black_box(&mut buf[..]))
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
