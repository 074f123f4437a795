//! `loadgen capacity --slo p99=1ms`: per size and transport, the highest rate that meets the
//! SLO with nothing lost or dropped, by a search in which each step is a short run.
//!
//! The search doubles the rate from `--rate` until a step fails (or `--max-rate` passes), then
//! bisects geometrically between the best passing and the lowest failing rate until they are
//! within 10 % or `--steps` runs were made; while no step has passed, it steps down by 4x
//! (down to 1/s). Each result says which of these ended it
//! ([`Bound`]): only a converged search measured a limit.

use anyhow::Context;
use serde::Serialize;

use crate::cli::CapacityArgs;
use crate::measure::QUANTILES;
use crate::phase::run_phase;
use crate::plan::Plan;
use crate::result::{RunResult, Transport};
use crate::units::{human_count, human_ns, Nanos, Rate};
use crate::{file_config, write_stdout, Outcome, Usage};

/// One latency objective: a quantile at most `limit`.
#[derive(Clone, Debug, PartialEq)]
pub struct Objective {
    /// The quantile name as in the reports (`p99`, `p99.9`).
    pub name: &'static str,
    /// The quantile.
    pub quantile: f64,
    /// The highest acceptable latency.
    pub limit: Nanos,
}

/// Parses `p99=1ms,p99.9=5ms`.
pub fn parse_slo(s: &str) -> Result<Vec<Objective>, Usage> {
    s.split(',')
        .map(|part| {
            let (q, limit) = part
                .split_once('=')
                .ok_or_else(|| Usage(format!("--slo {part:?}: expected e.g. p99=1ms")))?;
            let &(quantile, name) =
                QUANTILES
                    .iter()
                    .find(|(_, n)| *n == q.trim())
                    .ok_or_else(|| {
                        Usage(format!(
                            "--slo: unknown percentile {q:?} (p50, p90, p99, p99.9, p99.99)"
                        ))
                    })?;
            let limit = limit
                .trim()
                .parse()
                .map_err(|e| Usage(format!("--slo: {e}")))?;
            Ok(Objective {
                name,
                quantile,
                limit,
            })
        })
        .collect()
}

/// Whether a step's run meets the objectives with nothing dropped or lost; `Err` says why not.
pub fn meets(r: &RunResult, slo: &[Objective]) -> Result<(), String> {
    // Each cause apart: a negative `unaccounted` (warm-up events sent in the window) must not
    // offset real drops, and is itself a step that did not measure cleanly.
    let causes: Vec<String> = r
        .drops
        .iter()
        .filter(|(_, &n)| n != 0)
        .map(|(cause, n)| format!("{n} {cause}"))
        .collect();
    if !causes.is_empty() {
        return Err(format!("dropped: {}", causes.join(", ")));
    }
    if r.lost.unwrap_or(0) > 0 {
        return Err(format!("{} lost", r.lost.unwrap_or(0)));
    }
    for o in slo {
        let i = QUANTILES
            .iter()
            .position(|(_, n)| *n == o.name)
            .expect("known name");
        match r.latency_ns.quantiles()[i] {
            Some(v) if v <= o.limit.0 => {}
            Some(v) => return Err(format!("{} {} > {}", o.name, human_ns(v as f64), o.limit)),
            None => return Err(format!("{} not measured", o.name)),
        }
    }
    Ok(())
}

/// One step of a search.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// Rate tried.
    pub rate_per_s: f64,
    /// Whether it met the SLO.
    pub ok: bool,
    /// Why not.
    pub why: Option<String>,
    /// Its p99, ns.
    pub p99_ns: Option<u64>,
}

/// How a search ended: whether its rate is a measured limit or only a lower bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The best passing and the lowest failing rate are within 10 % (or no whole rate lies
    /// between them): the rate is the limit.
    Converged,
    /// Every step passed up to `--max-rate`: the limit is at least that, and not measured.
    MaxRate,
    /// `--steps` ran out first, still doubling or with passing and failing rates over 10 %
    /// apart: the limit lies between them.
    StepsRanOut,
    /// No step met the SLO: no capacity was measured.
    NonePassed,
}

/// The capacity of one size and transport.
#[derive(Clone, Debug, Serialize)]
pub struct Capacity {
    /// Datagram size.
    pub size_bytes: usize,
    /// Transport.
    pub transport: Transport,
    /// The highest passing rate (0 when none passed): a limit only when `bound` is
    /// `converged`.
    pub rate_per_s: f64,
    /// How the search ended.
    pub bound: Bound,
    /// The lowest rate that failed (`None`: none failed).
    pub failed_rate_per_s: Option<f64>,
    /// Latency at that rate.
    pub latency_ns: Option<crate::measure::Percentiles>,
    /// Every step, in order.
    pub steps: Vec<Step>,
}

/// A search's outcome: the best passing rate and its run, every step, and how it ended.
pub type Searched = (Option<(Rate, RunResult)>, Vec<Step>, Bound);

/// Searches the capacity of one size and transport; `run` makes one step's run.
pub fn search(
    start: Rate,
    max: Rate,
    steps: u32,
    slo: &[Objective],
    mut run: impl FnMut(Rate) -> anyhow::Result<RunResult>,
) -> anyhow::Result<Searched> {
    let (mut best, mut fail): (Option<(Rate, RunResult)>, Option<Rate>) = (None, None);
    // A start above the search's ceiling would be reported as a capacity past it.
    let mut rate = if start.per_s() > max.per_s() {
        max
    } else {
        start
    };
    let mut log = Vec::new();
    // Whatever ends the loop early says why; running out of steps is the rest.
    let mut bound = None;
    for _ in 0..steps {
        let r = run(rate)?;
        let verdict = meets(&r, slo);
        log.push(Step {
            rate_per_s: rate.per_s(),
            ok: verdict.is_ok(),
            why: verdict.clone().err(),
            p99_ns: r.latency_ns.p99,
        });
        if verdict.is_ok() {
            best = Some((rate, r));
        } else {
            fail = Some(rate);
        }
        let lo = best.as_ref().map(|(r, _)| r.per_s());
        let (next, ended) = match (lo, fail.map(Rate::per_s)) {
            (Some(lo), None) if lo >= max.per_s() => (rate, Some(Bound::MaxRate)),
            (Some(lo), None) if lo * 2.0 >= max.per_s() => (max, None),
            (Some(lo), None) => (step_rate(lo * 2.0), None),
            (None, Some(hi)) if hi <= 1.0 => (rate, Some(Bound::NonePassed)),
            (None, Some(hi)) => (step_rate((hi / 4.0).max(1.0)), None),
            (Some(lo), Some(hi)) if hi / lo < 1.1 => (rate, Some(Bound::Converged)),
            // Whole rates: at a few events a second the middle may round down to `lo`.
            (Some(lo), Some(hi)) => match step_rate((lo * hi).sqrt()) {
                mid if mid.per_s() <= lo => (rate, Some(Bound::Converged)),
                mid => (mid, None),
            },
            (None, None) => unreachable!("a step was made"),
        };
        if ended.is_some() {
            bound = ended;
            break;
        }
        rate = next;
    }
    let bound = bound.unwrap_or(if best.is_none() {
        Bound::NonePassed
    } else {
        Bound::StepsRanOut
    });
    Ok((best, log, bound))
}

/// A search's bound for the table: `converged`, `reached --max-rate`, `steps ran out
/// (hi/lo=1.52)` or `(still doubling)`, `none passed`.
pub fn describe(c: &Capacity) -> String {
    match (c.bound, c.failed_rate_per_s) {
        (Bound::Converged, _) => "converged".into(),
        (Bound::MaxRate, _) => "reached --max-rate".into(),
        (Bound::StepsRanOut, Some(hi)) if c.rate_per_s > 0.0 => {
            format!("steps ran out (hi/lo={:.2})", hi / c.rate_per_s)
        }
        (Bound::StepsRanOut, _) => "steps ran out (still doubling)".into(),
        (Bound::NonePassed, _) => "none passed".into(),
    }
}

/// A rate the search steps to: whole events per second from 1/s up, as it always stepped, and
/// thousandths below, where a search may start (cast to whole events, 0.25/s doubled to 0/s).
fn step_rate(per_s: f64) -> Rate {
    if per_s >= 1.0 {
        Rate::per_sec(per_s as u64)
    } else {
        Rate::from_per_s(per_s)
    }
}

/// The JSON report's schema: 2 added each result's `bound` and `failed_rate_per_s`, without
/// which `rate_per_s` read as a limit when the search had not found one.
pub const SCHEMA: &str = "loadgen-capacity/2";

#[derive(Serialize)]
struct Report<'a> {
    schema: &'static str,
    backend: &'a str,
    slo: &'a str,
    capacity: &'a [Capacity],
}

/// `loadgen capacity`.
pub fn run(args: &CapacityArgs) -> anyhow::Result<Outcome> {
    let slo = parse_slo(&args.slo)?;
    let file = file_config(args.common.config.as_deref())?;
    let mut plan: Plan = Plan::resolve(&args.common, &file, None)?;
    // A step passes on its latency and loss, which only embedded receivers measure.
    if !plan.external.is_empty() {
        return Err(Usage(format!(
            "capacity measures with embedded receivers: remove {}",
            plan.name("targets_external")
        ))
        .into());
    }
    // Short steps unless asked otherwise.
    if args.common.duration.is_none() && file.duration.is_none() {
        plan.duration = Nanos(1_000_000_000);
    }
    if args.common.warmup.is_none() && file.warmup.is_none() {
        plan.warmup = Nanos(200_000_000);
    }
    if let Some(json) = args.common.json.as_deref().filter(|&j| j != "-") {
        crate::check_writable("--json", std::path::Path::new(json))?;
    }
    let start = args
        .common
        .rate
        .or(file.rate)
        .unwrap_or(Rate::per_sec(10_000));
    let mut table = Vec::new();
    for &size in &plan.sizes {
        for &t in &plan.transports {
            let (best, steps, bound) = search(start, args.max_rate, args.steps, &slo, |rate| {
                let mut p = plan.clone();
                p.rate = rate;
                let r = run_phase(&p, size, t)?;
                errln!(
                    "loadgen capacity: {size} B {t} at {rate}: {}",
                    meets(&r, &slo)
                        .err()
                        .unwrap_or_else(|| "meets the SLO".into())
                );
                Ok(r)
            })?;
            table.push(Capacity {
                size_bytes: size,
                transport: t,
                rate_per_s: best.as_ref().map_or(0.0, |(r, _)| r.per_s()),
                latency_ns: best.map(|(_, r)| r.latency_ns),
                bound,
                failed_rate_per_s: steps
                    .iter()
                    .filter(|s| !s.ok)
                    .map(|s| s.rate_per_s)
                    .reduce(f64::min),
                steps,
            });
        }
    }
    let backend = crate::backend_name(&plan);
    let mut out = format!(
        "{:<8}  {:<9}  {:>12}  {:>9}  {:>9}  {:>9}  {:>5}  bound\n",
        "size", "transport", "capacity/s", "p50", "p99", "max", "steps"
    );
    for c in &table {
        let q = |f: fn(&crate::measure::Percentiles) -> Option<u64>| {
            c.latency_ns
                .as_ref()
                .and_then(f)
                .map_or("n/a".into(), |v| human_ns(v as f64))
        };
        out += &format!(
            "{:<8}  {:<9}  {:>12}  {:>9}  {:>9}  {:>9}  {:>5}  {}\n",
            format!("{} B", c.size_bytes),
            c.transport.as_str(),
            human_count(c.rate_per_s),
            q(|p| p.p50),
            q(|p| p.p99),
            q(|p| p.max),
            c.steps.len(),
            describe(c)
        );
    }
    out += &format!(
        "SLO {} with nothing dropped or lost; backend {backend}; capacity/s is a measured \
         limit only where the search converged\n",
        args.slo
    );
    let json = serde_json::to_string_pretty(&Report {
        schema: SCHEMA,
        backend: &backend,
        slo: &args.slo,
        capacity: &table,
    })? + "\n";
    match args.common.json.as_deref() {
        Some("-") => {
            errprint!("{out}");
            write_stdout(&json)?;
        }
        Some(path) => {
            // The file first: a closed stdout must not cost it.
            std::fs::write(path, json).with_context(|| format!("cannot write {path}"))?;
            write_stdout(&out)?;
        }
        None => write_stdout(&out)?,
    }
    // No rate met the SLO: the planner has no answer to give, a failure (exit 1) rather than
    // a capacity of 0 (exit 0); exit 3 belongs to `run`'s threshold flags.
    let none: Vec<String> = table
        .iter()
        .filter(|c| c.bound == Bound::NonePassed)
        .map(|c| {
            format!(
                "{} B {} (down to {}/s)",
                c.size_bytes,
                c.transport,
                human_count(c.failed_rate_per_s.unwrap_or(0.0))
            )
        })
        .collect();
    anyhow::ensure!(
        none.is_empty(),
        "capacity: no rate tried met the SLO with nothing dropped or lost for {}: no capacity \
         was measured (see each step's reason above; try a lower --rate or a looser --slo)",
        none.join(", ")
    );
    Ok(Outcome {
        runs: Vec::new(),
        failed: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slo_parses_and_refuses_unknown_percentiles() {
        let s = parse_slo("p99=1ms,p99.9=5ms").unwrap();
        assert_eq!((s[0].name, s[0].limit), ("p99", Nanos(1_000_000)));
        assert_eq!(s[1].quantile, 0.999);
        assert!(parse_slo("p98=1ms").is_err());
        assert!(parse_slo("p99").is_err());
    }

    #[test]
    fn a_step_with_warm_up_events_in_its_window_does_not_hide_its_drops() {
        let h = {
            let mut h = crate::measure::histogram();
            h.record(1_000).unwrap();
            h
        };
        let mut r = crate::result::tests::dummy(64, vec![h], 0);
        assert_eq!(meets(&r, &[]), Ok(()));
        // 100 shed, and 173 warm-up events sent in the window (unaccounted -173): the sum of
        // the causes is negative, and the step still did not run clean.
        r.drops.insert(crate::result::cause::SHED, 100);
        r.drops.insert(crate::result::cause::UNACCOUNTED, -173);
        let why = meets(&r, &[]).unwrap_err();
        assert!(why.contains("100 shed") && why.contains("-173"), "{why}");
    }

    #[test]
    fn the_search_converges_on_the_knee() {
        // A fake system whose p99 is fine up to 37k/s.
        let slo = parse_slo("p99=1ms").unwrap();
        let fake = |rate: Rate| {
            let mut h = crate::measure::histogram();
            let v = if rate.per_s() <= 37_000.0 {
                500_000
            } else {
                5_000_000
            };
            h.record(v).unwrap();
            let mut r = crate::result::tests::dummy(64, vec![h], 0);
            r.latency_ns = crate::measure::Percentiles::of(&r.latency, 1.0);
            Ok(r)
        };
        let (best, steps, _) = search(
            Rate::per_sec(10_000),
            Rate::per_sec(2_000_000),
            12,
            &slo,
            fake,
        )
        .unwrap();
        let best = best.unwrap().0.per_s();
        assert!(
            (33_600.0..=37_000.0).contains(&best),
            "{best} after {steps:?}"
        );
        assert!(steps.len() <= 12);

        // A knee at 1/s: no step between 1 and 2, and a start above the ceiling starts at it.
        let (best, steps, _) = search(Rate::per_sec(1), Rate::per_sec(2), 12, &slo, |rate| {
            fake(Rate::per_sec(if rate.per_s() <= 1.0 { 1 } else { 50_000 }))
        })
        .unwrap();
        assert_eq!(best.unwrap().0.per_s(), 1.0, "{steps:?}");
        assert_eq!(steps.len(), 2, "{steps:?}");
        let (best, steps, _) =
            search(Rate::per_sec(9_000), Rate::per_sec(5_000), 12, &slo, fake).unwrap();
        assert_eq!(best.unwrap().0.per_s(), 5_000.0, "{steps:?}");
    }

    /// A fake run at `rate` whose p99 meets a 1 ms SLO up to `knee`/s.
    fn knee_at(knee: f64) -> impl FnMut(Rate) -> anyhow::Result<RunResult> {
        move |rate: Rate| {
            let mut h = crate::measure::histogram();
            h.record(if rate.per_s() <= knee {
                500_000
            } else {
                5_000_000
            })
            .unwrap();
            let mut r = crate::result::tests::dummy(64, vec![h], 0);
            r.latency_ns = crate::measure::Percentiles::of(&r.latency, 1.0);
            Ok(r)
        }
    }

    /// A search that passed every step up to --max-rate, or ran out of steps, printed its last
    /// passing rate like a measured limit: each says how it ended.
    #[test]
    fn the_search_says_whether_it_found_the_limit() {
        let slo = parse_slo("p99=1ms").unwrap();
        let k = Rate::per_sec;
        let bound = |start, max, steps, knee| search(start, max, steps, &slo, knee_at(knee));
        // 10k, 20k, 40k pass: the ceiling, not a limit.
        let (best, steps, b) = bound(k(10_000), k(40_000), 3, 1e9).unwrap();
        assert_eq!(
            (best.unwrap().0.per_s(), steps.len(), b),
            (40_000.0, 3, Bound::MaxRate)
        );
        // Still doubling when the steps ran out.
        let (_, _, b) = bound(k(10_000), k(2_000_000), 3, 1e9).unwrap();
        assert_eq!(b, Bound::StepsRanOut);
        // 10k, 20k pass, 40k fails, 28.2k passes: 40k/28.2k = 1.41 when the steps ran out.
        let (best, steps, b) = bound(k(10_000), k(2_000_000), 4, 30_000.0).unwrap();
        assert_eq!(
            (best.as_ref().unwrap().0.per_s(), b),
            (28_284.0, Bound::StepsRanOut)
        );
        let c = Capacity {
            size_bytes: 64,
            transport: Transport::Udp,
            rate_per_s: 28_284.0,
            latency_ns: None,
            bound: b,
            failed_rate_per_s: Some(40_000.0),
            steps,
        };
        assert_eq!(describe(&c), "steps ran out (hi/lo=1.41)");
        // Within 10 %.
        let (_, _, b) = bound(k(10_000), k(2_000_000), 12, 30_000.0).unwrap();
        assert_eq!(b, Bound::Converged);
        // Nothing passes: down to 1/s, or until the steps run out.
        let (best, _, b) = bound(k(10_000), k(2_000_000), 12, 0.5).unwrap();
        assert_eq!((best.is_none(), b), (true, Bound::NonePassed));
        let (_, _, b) = bound(k(10_000), k(2_000_000), 2, 0.5).unwrap();
        assert_eq!(b, Bound::NonePassed);
    }

    /// From under 1 event per second the search doubles exactly (it cast 0.5/s to 0/s, which
    /// divided by zero in the scheduler) and bisects without reaching 0.
    #[test]
    fn the_search_steps_below_one_per_second_without_reaching_zero() {
        let slo = parse_slo("p99=1ms").unwrap();
        let mut tried = Vec::new();
        let (best, _, _) = search(
            "0.25/s".parse().unwrap(),
            Rate::per_sec(2_000_000),
            12,
            &slo,
            |rate: Rate| {
                assert!(rate.events > 0 && rate.per_ns > 0, "{rate:?}");
                tried.push(rate.per_s());
                knee_at(3.0)(rate)
            },
        )
        .unwrap();
        assert_eq!(tried[..5], [0.25, 0.5, 1.0, 2.0, 4.0], "{tried:?}");
        // Between 2 and 4 the search steps in whole rates: sqrt(8) rounds down to 2.
        assert_eq!(best.unwrap().0.per_s(), 2.0, "{tried:?}");
        // A ceiling under 1/s is a rate too (it was cast to 0/s).
        let (best, _, _) = search(
            "0.25/s".parse().unwrap(),
            "0.4/s".parse().unwrap(),
            3,
            &slo,
            |_| {
                let mut h = crate::measure::histogram();
                h.record(1).unwrap();
                let mut r = crate::result::tests::dummy(64, vec![h], 0);
                r.latency_ns = crate::measure::Percentiles::of(&r.latency, 1.0);
                Ok(r)
            },
        )
        .unwrap();
        assert_eq!(best.unwrap().0.per_s(), 0.4);
    }
}
