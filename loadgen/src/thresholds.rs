//! Thresholds: `--max-p99`, `--max-p999`, `--max-loss`, `--min-achieved`.

use crate::config::Thresholds;
use crate::result::RunResult;
use crate::units::{human_count, human_ns};

/// Every threshold a run missed, each naming the threshold (as `name` says for its key:
/// `max_p99`, `max_p999`, `max_loss`, `min_achieved`), the run and the measured value.
pub fn check(t: &Thresholds, runs: &[RunResult], name: impl Fn(&str) -> String) -> Vec<String> {
    let mut failed = Vec::new();
    for r in runs {
        let run = format!("{} B {}", r.size_bytes, r.transport);
        let mut latency = |key: &str, limit: Option<crate::units::Nanos>, v: Option<u64>| {
            let flag = name(key);
            let Some(limit) = limit else { return };
            match v {
                Some(v) if v <= limit.0 => {}
                Some(v) => failed.push(format!(
                    "{flag} {}: {run} measured {} ({})",
                    human_ns(limit.0 as f64),
                    human_ns(v as f64),
                    factor(v as f64, limit.0 as f64, "over")
                )),
                None => failed.push(format!(
                    "{flag} {}: {run} not measured (loss too high to know the percentile)",
                    human_ns(limit.0 as f64)
                )),
            }
        };
        latency("max_p99", t.max_p99, r.latency_ns.p99);
        latency("max_p999", t.max_p999, r.latency_ns.p99_9);
        if let Some(max) = t.max_loss {
            // Of the scheduled events: shed and refused ones count as not received, which the
            // table's `lost` (sent, not received) does not show, hence both counts.
            let missing = r.loss_ratio.unwrap_or(0.0);
            if missing > max.0 {
                failed.push(format!(
                    "{} {}%: {run} did not receive {}% of scheduled (drops {}, lost {}; {})",
                    name("max_loss"),
                    percent(max.0),
                    percent(missing),
                    r.dropped(),
                    r.lost.unwrap_or(0),
                    factor(missing, max.0, "over")
                ));
            }
        }
        if let Some(min) = t.min_achieved {
            if r.achieved_ratio < min.0 {
                failed.push(format!(
                    "{} {}%: {run} achieved {}/s = {}% of {}/s ({})",
                    name("min_achieved"),
                    percent(min.0),
                    human_count(r.achieved_rate_per_s),
                    percent(r.achieved_ratio),
                    human_count(r.target_rate_per_s),
                    factor(min.0, r.achieved_ratio, "under")
                ));
            }
        }
    }
    failed
}

/// A threshold's flag: `--max-p99` for `max_p99`.
pub fn flag(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// A fraction as a percentage without float noise: 0.57 is `57`, not `56.99999999999999`.
fn percent(fraction: f64) -> String {
    let s = format!("{:.6}", fraction * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// How far a value is past its limit, for every threshold: `250.00x over`.
fn factor(bigger: f64, smaller: f64, side: &str) -> String {
    if smaller > 0.0 {
        format!("{:.2}x {side}", bigger / smaller)
    } else if side == "over" {
        "none allowed".into()
    } else {
        "nothing arrived".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::cause;
    use crate::units::Fraction;

    /// A 1 000-event run of which 100 were shed: none lost, 10 % not received.
    fn shed_a_tenth() -> RunResult {
        let mut r = crate::result::tests::dummy_of_a_thousand();
        r.scheduled = 1_000;
        r.drops.insert(cause::SHED, 100);
        r.received = Some(900);
        r.loss_ratio = Some(0.1);
        r.achieved_ratio = 0.9;
        r.achieved_rate_per_s = 900.0;
        r
    }

    /// `--max-loss` counts what was shed or refused, not only `lost`: it said "lost 10%" of a
    /// run whose table said `lost 0`.
    #[test]
    fn max_loss_says_what_was_not_received_and_by_how_much() {
        let t = Thresholds {
            max_loss: Some("2%".parse().unwrap()),
            ..Thresholds::default()
        };
        assert_eq!(
            check(&t, &[shed_a_tenth()], flag),
            [
                "--max-loss 2%: 64 B udp did not receive 10% of scheduled (drops 100, lost 0; \
              5.00x over)"
            ]
        );
        let none = Thresholds {
            max_loss: Some(Fraction(0.0)),
            ..Thresholds::default()
        };
        assert!(check(&none, &[shed_a_tenth()], flag)[0].ends_with("lost 0; none allowed)"));
    }

    /// `--min-achieved 57%` printed 56.99999999999999%.
    #[test]
    fn min_achieved_prints_the_limit_as_given_and_the_factor() {
        let t = Thresholds {
            min_achieved: Some("95%".parse().unwrap()),
            ..Thresholds::default()
        };
        assert_eq!(
            check(&t, &[shed_a_tenth()], flag),
            ["--min-achieved 95%: 64 B udp achieved 900/s = 90% of 1000/s (1.06x under)"]
        );
        let t = Thresholds {
            min_achieved: Some("57%".parse().unwrap()),
            ..Thresholds::default()
        };
        let mut r = shed_a_tenth();
        r.achieved_ratio = 0.5;
        r.achieved_rate_per_s = 500.0;
        let failed = check(&t, &[r], flag);
        assert!(failed[0].starts_with("--min-achieved 57%: "), "{failed:?}");
    }
}
