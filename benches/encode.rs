//! Encode throughput: `Format::Line` and `Format::Jsonrpc` for events whose encoding (in the
//! format measured) is exactly 64 B, 1 KiB and 65 457 B (the datagram ceiling). Goal: >= 10 million 64-byte events/s on
//! one thread.
//!
//! `cargo bench --bench encode -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use event_datagram::{Format, Params, ValueRef, MAX_DATAGRAM};

const EVENT: &str = "E_PIKE_BLOCKED";

/// Params whose encoding of [`EVENT`] in `format` is exactly `size` bytes: a realistic head
/// (`ip`, `attempts`; shorter when `size` leaves no room for it) and a padding string `pad`
/// that makes up the rest. The padding needs no quoting or escaping, so its length adds 1:1.
fn params_of_size(format: Format, size: usize) -> Params {
    let heads = [
        Params::new()
            .str("ip", "192.168.2.11")
            .unwrap()
            .int("attempts", 3)
            .unwrap(),
        Params::new().str("ip", "192.168.2.11").unwrap(),
        Params::new(),
    ];
    for head in heads {
        let mut with_empty_pad = head.clone();
        with_empty_pad.push(Some("pad"), ValueRef::Str("")).unwrap();
        let base = encoded_len(format, &with_empty_pad);
        if base > size {
            continue;
        }
        let value = "x".repeat(size - base);
        let mut params = head;
        params.push(Some("pad"), ValueRef::Str(&value)).unwrap();
        assert_eq!(
            encoded_len(format, &params),
            size,
            "{format} encoding of the {size}-byte case"
        );
        return params;
    }
    panic!("no {format} event of {size} bytes");
}

fn encoded_len(format: Format, params: &Params) -> usize {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    format.encode(EVENT, params, &mut buf).unwrap()
}

fn bench_encode(c: &mut Criterion) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for (label, size) in [("64B", 64), ("1KiB", 1024), ("65457B", MAX_DATAGRAM)] {
        let mut group = c.benchmark_group(format!("encode/{label}"));
        for format in Format::ALL {
            let params = params_of_size(format, size);
            group.throughput(Throughput::Bytes(size as u64));
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
    let mut group = c.benchmark_group("encode/64B-events");
    group.throughput(Throughput::Elements(1));
    for format in Format::ALL {
        let params = params_of_size(format, 64);
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
