//! `.hlog`: an HdrHistogram interval log (V2 deflate, base64), one histogram per second of each
//! run, tagged `SIZEB-TRANSPORT` (e.g. `64B-udp`), for HistogramLogProcessor and
//! HistogramLogAnalyzer. Timestamps are seconds since loadgen's start (StartTime = BaseTime).
//! A run that missed events has a `#` comment line before its intervals: they hold the
//! received events only.

use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;

use crate::result::RunResult;

/// The tag of a run's intervals.
pub fn tag(r: &RunResult) -> String {
    format!("{}B-{}", r.size_bytes, r.transport)
}

/// The log of every run's intervals. `origin` is the wall-clock time of loadgen's start.
pub fn render_at(runs: &[RunResult], origin: SystemTime) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    buf.extend_from_slice(b"#[Histogram log format version 1.3]\n");
    let mut serializer = V2DeflateSerializer::new();
    buf.extend_from_slice(
        b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
    );
    {
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment("Logged by loadgen (event-datagram); values in ns")
            .with_start_time(origin)
            .with_base_time(origin)
            .with_max_value_divisor(1e6)
            .begin_log_with(&mut buf, &mut serializer)?;
        for r in runs {
            let tag = tag(r);
            if let Some(note) = super::received_only(r) {
                log.write_comment(&format!("{tag}: {note}"))?;
            }
            // Decoded one second at a time: the run keeps them serialized.
            for (i, h) in r.intervals.histograms().enumerate() {
                let start =
                    Duration::from_nanos(r.intervals_start_ns) + Duration::from_secs(i as u64);
                log.write_histogram(&h, start, Duration::from_secs(1), Tag::new(&tag))
                    .map_err(|e| anyhow::anyhow!("cannot write the interval log: {e}"))?;
            }
        }
    }
    Ok(String::from_utf8(buf).expect("the log is text"))
}

/// [`render_at`] with the wall-clock time of `origin_ns` (CLOCK_MONOTONIC) as the origin.
pub fn render(runs: &[RunResult], origin_ns: u64) -> anyhow::Result<String> {
    let since = crate::clock::mono_ns().saturating_sub(origin_ns);
    render_at(runs, SystemTime::now() - Duration::from_nanos(since))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::Histogram;

    /// Two runs of three seconds each, and their histograms.
    fn runs() -> (Vec<RunResult>, Vec<Vec<Histogram<u64>>>) {
        let (mut runs, mut all) = (Vec::new(), Vec::new());
        for (size, base) in [(64usize, 1_000u64), (1400, 50_000)] {
            let mut intervals = Vec::new();
            for s in 0..3u64 {
                let mut h = crate::measure::histogram();
                for v in 0..1000 {
                    h.record(base + v * (s + 1)).unwrap();
                }
                intervals.push(h);
            }
            runs.push(crate::result::tests::dummy(
                size,
                intervals.clone(),
                5_000_000_000,
            ));
            all.push(intervals);
        }
        (runs, all)
    }

    fn origin() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    /// The log as it was written when every second was kept as a full histogram: the
    /// serialized intervals must give the same bytes.
    #[test]
    fn is_byte_for_byte_the_log_of_the_full_histograms() {
        let (runs, all) = runs();
        let mut want = Vec::new();
        want.extend_from_slice(b"#[Histogram log format version 1.3]\n");
        want.extend_from_slice(
            b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
        );
        let mut serializer = V2DeflateSerializer::new();
        {
            let mut log = IntervalLogWriterBuilder::new()
                .add_comment("Logged by loadgen (event-datagram); values in ns")
                .with_start_time(origin())
                .with_base_time(origin())
                .with_max_value_divisor(1e6)
                .begin_log_with(&mut want, &mut serializer)
                .unwrap();
            for (r, intervals) in runs.iter().zip(&all) {
                for (i, h) in intervals.iter().enumerate() {
                    let start = Duration::from_secs(5 + i as u64);
                    log.write_histogram(h, start, Duration::from_secs(1), Tag::new(&tag(r)))
                        .unwrap();
                }
            }
        }
        assert_eq!(
            render_at(&runs, origin()).unwrap(),
            String::from_utf8(want).unwrap()
        );
    }

    #[test]
    fn a_lossy_run_says_its_intervals_hold_the_received_events() {
        let (mut runs, _) = runs();
        runs[1].scheduled += 7;
        let text = render_at(&runs, origin()).unwrap();
        let notes: Vec<&str> = text.lines().filter(|l| l.contains("received")).collect();
        assert_eq!(notes.len(), 1, "{text}");
        assert!(
            notes[0].starts_with("#1400B-udp: latency of the received events only: 7 of 3007"),
            "{text}"
        );
        // The readers skip it.
        let intervals = IntervalLogIterator::new(text.as_bytes())
            .filter(|e| matches!(e, Ok(LogEntry::Interval(_))))
            .count();
        assert_eq!(intervals, 6);
    }

    #[test]
    fn round_trips_through_the_interval_log_reader() {
        let (runs, all) = runs();
        let text = render_at(&runs, origin()).unwrap();
        let mut de = Deserializer::new();
        let mut seen = Vec::new();
        for entry in IntervalLogIterator::new(text.as_bytes()) {
            match entry.unwrap() {
                LogEntry::Interval(ilh) => {
                    let bytes = base64_decode(ilh.encoded_histogram());
                    let h: hdrhistogram::Histogram<u64> = de.deserialize(&mut &bytes[..]).unwrap();
                    seen.push((
                        ilh.tag().unwrap().as_str().to_owned(),
                        ilh.start_timestamp(),
                        h,
                    ));
                }
                LogEntry::StartTime(t) => assert_eq!(t.as_secs(), 1_700_000_000),
                LogEntry::BaseTime(_) => {}
            }
        }
        assert_eq!(seen.len(), 6);
        assert_eq!(seen[0].0, "64B-udp");
        assert_eq!(seen[4].0, "1400B-udp");
        assert_eq!(seen[1].1, Duration::from_secs(6));
        for ((_, _, h), want) in seen.iter().zip(all.iter().flatten()) {
            assert_eq!(h, want);
        }
    }

    /// Standard base64 (the interval log's encoding), to check the log without a new dependency.
    fn base64_decode(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        } as u32;
        let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
        let mut out = Vec::new();
        for chunk in bytes.chunks(4) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &c)| n | val(c) << (18 - 6 * i));
            out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
        }
        out
    }
}
