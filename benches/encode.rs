//! Encode throughput: `Format::Line` and `Format::Jsonrpc` for events whose encoding (in the
//! format measured) is exactly 64 B, 1 KiB and 65 457 B (the datagram ceiling). Goal: >= 10 million 64-byte events/s on
//! one thread.
//!
//! `cargo bench --bench encode -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use event_datagram::{Format, MAX_DATAGRAM};

#[path = "common/sized.rs"]
mod sized;

use sized::{params_of_size, EVENT};

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
