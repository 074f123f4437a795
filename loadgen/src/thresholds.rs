//! Thresholds: `--max-p99`, `--max-p999`, `--max-loss`, `--min-achieved`.

use crate::config::Thresholds;
use crate::result::RunResult;
use crate::units::human_ns;

/// Every threshold a run missed, each naming the threshold, the run and the measured value.
pub fn check(t: &Thresholds, runs: &[RunResult]) -> Vec<String> {
    let mut failed = Vec::new();
    for r in runs {
        let run = format!("{} B {}", r.size_bytes, r.transport);
        let mut latency = |flag: &str, limit: Option<crate::units::Nanos>, v: Option<u64>| {
            let Some(limit) = limit else { return };
            match v {
                Some(v) if v <= limit.0 => {}
                Some(v) => failed.push(format!(
                    "{flag} {}: {run} measured {} ({:.1}x over)",
                    human_ns(limit.0 as f64),
                    human_ns(v as f64),
                    v as f64 / limit.0.max(1) as f64
                )),
                None => failed.push(format!(
                    "{flag} {}: {run} not measured (loss too high to know the percentile)",
                    human_ns(limit.0 as f64)
                )),
            }
        };
        latency("--max-p99", t.max_p99, r.latency_ns.p99);
        latency("--max-p999", t.max_p999, r.latency_ns.p99_9);
        if let Some(max) = t.max_loss {
            let loss = r.loss_ratio.unwrap_or(0.0);
            if loss > max.0 {
                failed.push(format!(
                    "--max-loss {}%: {run} lost {:.4}%",
                    max.0 * 100.0,
                    loss * 100.0
                ));
            }
        }
        if let Some(min) = t.min_achieved {
            if r.achieved_ratio < min.0 {
                failed.push(format!(
                    "--min-achieved {}%: {run} achieved {:.0}/s = {:.2}% of {:.0}/s",
                    min.0 * 100.0,
                    r.achieved_rate_per_s,
                    r.achieved_ratio * 100.0,
                    r.target_rate_per_s
                ));
            }
        }
    }
    failed
}
