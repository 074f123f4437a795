//! Encode throughput: `Format::Line` and `Format::Jsonrpc` for events whose encoding (in the
//! format measured) is exactly 64 B, 1 KiB and 65 457 B (the datagram ceiling). Goal: >= 10 million 64-byte events/s on
//! one thread.
//!
//! Also building those events' `Params` (`build/params`), where string values are looked at
//! once for what they need escaped, and the way to raise many events of one shape: a clone of
//! prepared `Params` with two fixed-width values set (`build/clone+set`).
//!
//! `cargo bench --bench encode -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use event_datagram::{EventName, Format, Params, ValueRef, MAX_DATAGRAM};

#[path = "common/sized.rs"]
mod sized;

use sized::{params_of_size, EVENT};

fn bench_encode(c: &mut Criterion) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // A validated name, as the dispatcher encodes with (`Format::encode` checks a `&str` first).
    let event = EventName::new(EVENT).unwrap();
    for (label, size) in [("64B", 64), ("1KiB", 1024), ("65457B", MAX_DATAGRAM)] {
        let mut group = c.benchmark_group(format!("encode/{label}"));
        for format in Format::ALL {
            let params = params_of_size(format, size);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new("bytes", format), &params, |b, p| {
                b.iter(|| {
                    format
                        .encode_validated(black_box(&event), black_box(p), black_box(&mut buf[..]))
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
                    .encode_validated(black_box(&event), black_box(p), black_box(&mut buf[..]))
                    .unwrap()
            })
        });
    }
    group.finish();
}

/// Building the params of those events: where the values are looked at once for what they need
/// escaped (the encoders above then only copy), on the producer's thread.
fn bench_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    for (label, size) in [("64B", 64), ("1KiB", 1024), ("65457B", MAX_DATAGRAM)] {
        let params = params_of_size(Format::Line, size);
        let fields: Vec<(String, String)> = params
            .iter()
            .map(|p| {
                let value = match p.value {
                    ValueRef::Str(s) => s.to_owned(),
                    ValueRef::Int(n) => n.to_string(),
                };
                (p.name.unwrap_or_default().to_owned(), value)
            })
            .collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("params", label), &fields, |b, fields| {
            b.iter(|| {
                let mut p = Params::new();
                for (name, value) in fields {
                    p.push(Some(name), ValueRef::Str(black_box(value))).unwrap();
                }
                p
            })
        });
    }

    // Raising many events of one shape: a clone of prepared params with two fixed-width
    // values set (what loadgen's producers do for every event).
    group.throughput(Throughput::Elements(1));
    let prepared = Params::new()
        .unnamed_str("0123abcd")
        .and_then(|p| p.unnamed_str("007"))
        .and_then(|p| p.unnamed_str("000000000000"))
        .and_then(|p| p.unnamed_str("0000000000000000000"))
        .and_then(|p| p.unnamed_str(&"x".repeat(140)))
        .unwrap();
    let values: Vec<(String, String)> = (0..64u64)
        .map(|n| {
            (
                format!("{:012}", n * 7919),
                format!("{:019}", n * 1_000_003),
            )
        })
        .collect();
    group.bench_function("clone+set/2-of-5", |b| {
        let mut n = 0;
        b.iter(|| {
            n = (n + 1) % values.len();
            let (seq, ns) = &values[n];
            let mut p = black_box(&prepared).clone();
            p.set(2, ValueRef::Str(seq)).unwrap();
            p.set(3, ValueRef::Str(ns)).unwrap();
            p
        })
    });
    group.finish();
}

criterion_group!(benches, bench_encode, bench_build);
criterion_main!(benches);
