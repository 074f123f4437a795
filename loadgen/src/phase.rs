//! One run: a fresh dispatcher, embedded sinks (or external targets), warm-up, the measured
//! window, shutdown, drain, accounting.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use event_datagram::{
    Dispatcher, DispatcherConfig, EventId, Expiry, QueuePolicy, RaiseError, Stats,
    SubscriptionOptions, Target, TargetCounters, UnixAddr,
};
use hdrhistogram::Histogram;

use crate::clock::{mono_ns, sleep_coarse, sleep_until};
use crate::cpu::CpuTimes;
use crate::measure::{histogram, Limits};
use crate::payload::{Template, EVENT};
use crate::plan::Plan;
use crate::result::{GeneratorCounts, RunResult, RunShape, TargetOutcome, Transport};
use crate::schedule::Pacer;
use crate::sink::{Sink, TempDir, MAX_RUNS};
use crate::threads::{this_thread_ns, RunCpu, ThreadTimes, PRODUCER_THREAD};
use crate::units::{human_count, human_ns};

/// The dispatcher's channel holds at most this many bytes of large events' params, and each
/// target's queue this many bytes of datagrams (the defaults are 2 and 16 MiB): a run of
/// 65 457-byte events can then absorb a backlog of about 1 000 events in each, as with the
/// default count bounds, and does not queue a gigabyte (16 384 x 64 KiB) when a receiver falls
/// behind.
pub const QUEUE_BYTES: usize = 64 << 20;

/// Producers start this long after the run's start is fixed, so thread start-up is not lag.
const START_DELAY_NS: u64 = 2_000_000;

/// How long the warm-up's events may take to be sent after it ends, on top of the coalescing
/// delay (an open coalesced datagram waits that long for more events before it is sent).
const QUIESCE_NS: u64 = 5_000_000_000;

/// Runs one size over one transport (or over the plan's external targets).
pub fn run_phase(plan: &Plan, size: usize, transport: Transport) -> anyhow::Result<RunResult> {
    // The schedule divides by the rate's events (a capacity step once asked for 0/s).
    anyhow::ensure!(
        plan.rate.events > 0 && plan.rate.per_ns > 0,
        "a rate of {} cannot be scheduled",
        plan.rate
    );
    let template = Template::new(plan.format, size).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The events this run's windows can send: others at the sinks are foreign.
    let per_producer = |ns| Pacer::run_total(ns, plan.rate).div_ceil(plan.producers as u64);
    let limits = Limits {
        producers: plan.producers as u32,
        seqs: per_producer(plan.warmup.0.max(plan.duration.0)),
    };
    let dir = TempDir::new().context("cannot create a temp dir for UNIX sinks")?;
    let sinks: Vec<Sink> = if plan.external.is_empty() {
        (0..plan.targets)
            .map(|i| {
                let at = match transport {
                    Transport::Udp => Target::Udp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
                    Transport::Unix => {
                        Target::Unix(UnixAddr::Path(dir.path().join(format!("sink{i}.sock"))))
                    }
                    Transport::Mixed => anyhow::bail!("embedded sinks have one transport"),
                };
                Sink::bind(&at, limits).with_context(|| format!("cannot bind a sink at {at}"))
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        Vec::new()
    };
    let targets: Vec<Target> = if sinks.is_empty() {
        plan.external.clone()
    } else {
        sinks.iter().map(|s| s.target().clone()).collect()
    };
    let d = Dispatcher::start(DispatcherConfig {
        backend: plan.backend,
        queue_capacity: plan.queue_capacity,
        queue_bytes: QUEUE_BYTES,
        retry_queue_bytes: QUEUE_BYTES,
        queue_full: QueuePolicy::Drop,
        default_format: plan.format,
        shutdown_timeout_ms: 2_000,
        udp_gso: plan.udp_gso,
        ..DispatcherConfig::default()
    })
    .context("cannot start the dispatcher")?;
    let event = d.publish(EVENT)?;
    let options = SubscriptionOptions {
        format: plan.format,
        coalesce: plan.coalesce,
    };
    for t in &targets {
        d.subscribe_with(event, t.clone(), Expiry::Never, options)?;
    }
    let run_id = (mono_ns() as u32 ^ std::process::id().rotate_left(16)) & !1;
    let label = format!("{size} B {transport}");

    if plan.warmup.0 > 0 {
        let gen = Generator::new(plan, &d, event, &template, run_id, plan.warmup.0);
        gen.run(&sinks, None);
    }
    let coalesce_ns = plan.coalesce.map_or(0, |c| c.max_delay().as_nanos() as u64);
    let quiesce_ns = QUIESCE_NS + coalesce_ns;
    let leftover = quiesce(&d, targets.len() as u64, quiesce_ns);
    let before = d.stats();
    // What is left of the warm-up goes out in the window (each target's share: the events
    // still in the channel, and its own queue): what of that arrives is not lost. Only then,
    // and no more than that: warm-up datagrams still on their way when the window begins were
    // sent before it, and must not make up for the window's losses.
    let left_for: Vec<Option<u64>> = targets
        .iter()
        .map(|t| {
            let queued = before.target(t).map_or(0, |c| c.pending);
            (leftover > 0).then_some(before.events.pending + queued)
        })
        .collect();
    let warmup_before: Vec<(u64, u64)> = sinks.iter().map(|s| received(s, run_id)).collect();
    // Of the warm-up's events and datagrams sink `i` has received by `now`, those of the window.
    let warmup_in_window = |i: usize, now: (u64, u64)| -> (u64, u64) {
        match (left_for.get(i).copied().flatten(), warmup_before.get(i)) {
            (Some(most), Some(then)) => (
                now.0.saturating_sub(then.0).min(most),
                now.1.saturating_sub(then.1).min(most),
            ),
            _ => (0, 0),
        }
    };
    let drops_before: Vec<u64> = sinks
        .iter()
        .map(|s| s.kernel_drops().unwrap_or(0))
        .collect();

    let measured = run_id | 1;
    let gen = Generator::new(plan, &d, event, &template, measured, plan.duration.0);
    let (counts, lag, cpu, threads_cpu) = gen.run(&sinks, plan.progress.then_some(label.as_str()));
    let after = d.shutdown();

    let counters: Vec<TargetCounters> = targets.iter().map(|t| delta(&after, &before, t)).collect();
    let expected: u64 = counters.iter().map(|c| c.sent).sum();
    // What the window sent: its own events, and the warm-up's leftovers.
    let got = || -> u64 {
        let of = |(i, s): (usize, &Sink)| {
            received(s, measured).0 + warmup_in_window(i, received(s, run_id)).0
        };
        sinks.iter().enumerate().map(of).sum()
    };
    drain(got, expected, plan.drain_timeout.0);
    let outcomes: Vec<TargetOutcome> = targets
        .into_iter()
        .zip(counters)
        .enumerate()
        .map(|(i, (target, counters))| {
            let sink = sinks.get(i);
            let kernel = sink.and_then(Sink::kernel_drops).unwrap_or(0);
            TargetOutcome {
                target,
                counters,
                kernel_rx_drops: kernel.saturating_sub(drops_before.get(i).copied().unwrap_or(0)),
                recorder: None,
                warmup_received: (0, 0),
            }
        })
        .collect();
    let (mut malformed, mut refused) = (0, 0);
    let mut outcomes = outcomes;
    for (i, (o, sink)) in outcomes.iter_mut().zip(sinks).enumerate() {
        let mut book = sink.stop();
        malformed += book.malformed;
        refused += book.runs_refused;
        o.recorder = Some(book.runs.remove(&measured).unwrap_or_default());
        let warmup = book.runs.get(&run_id);
        o.warmup_received =
            warmup_in_window(i, warmup.map_or((0, 0), |r| (r.received, r.datagrams)));
    }
    let shape = RunShape {
        size,
        transport: if plan.external.is_empty() {
            transport
        } else {
            Transport::of_all(&plan.external)
        },
        format: plan.format.to_string(),
        producers: plan.producers,
        rate_per_s: plan.rate.per_s(),
        duration_ns: plan.duration.0,
        coalesce: plan.coalesce.map(Into::into),
        udp_gso: plan.udp_gso,
    };
    let mut r = RunResult::account(&shape, &counts, &lag, outcomes, malformed)
        .with_machine_cpu(CpuTimes::across(&cpu), &CpuTimes::each_between(&cpu));
    r.threads_cpu = threads_cpu;
    r.intervals_start_ns = r.intervals_start_ns.saturating_sub(plan.origin_ns);
    if refused > 0 {
        r.warnings.push(format!(
            "the receivers held {MAX_RUNS} runs when events of another came, and did not \
             record {refused} of them: something else sends loadgen events to their ports, and \
             those of this run among them count as lost"
        ));
    }
    if leftover > 0 {
        r.warnings.push(format!(
            "the warm-up had not finished sending {} after it ended: {leftover} of its \
             deliveries (events x targets) were still queued, and count in this window's \
             sent and drops (see `{}`); those that arrived are not counted lost",
            human_ns(quiesce_ns as f64),
            crate::result::cause::UNACCOUNTED
        ));
    }
    Ok(r)
}

/// `after - before` for one target (the warm-up's share removed).
fn delta(after: &Stats, before: &Stats, target: &Target) -> TargetCounters {
    let a = after.target(target).copied().unwrap_or_default();
    let b = before.target(target).copied().unwrap_or_default();
    a.since(&b)
}

/// Waits, up to `bound_ns`, until every warm-up event is sent or dropped, so the snapshot
/// taken next splits warm-up and measurement exactly; returns how many were still pending
/// (target deliveries: an event in the channel counts once per target), 0 when none.
fn quiesce(d: &Dispatcher, targets: u64, bound_ns: u64) -> u64 {
    let deadline = mono_ns() + bound_ns;
    loop {
        let s = d.stats();
        let pending = s.events.pending * targets + s.totals.pending;
        if pending == 0 || mono_ns() >= deadline {
            return pending;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Lets the sinks read what is still in flight: until `got` says they have `expected` events,
/// or nothing arrived for 300 ms, or `timeout_ns` passed.
fn drain(got: impl Fn() -> u64, expected: u64, timeout_ns: u64) {
    let start = mono_ns();
    let (mut last, mut last_change) = (u64::MAX, start);
    loop {
        let got = got();
        let now = mono_ns();
        if got >= expected || now - start > timeout_ns || now - last_change > 300_000_000 {
            return;
        }
        if got != last {
            (last, last_change) = (got, now);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Events and datagrams of `run` `sink` has received so far.
fn received(sink: &Sink, run: u32) -> (u64, u64) {
    sink.book()
        .runs
        .get(&run)
        .map_or((0, 0), |r| (r.received, r.datagrams))
}

/// Counters the producers update once per tick, read by the progress line.
#[derive(Default)]
struct Live {
    scheduled: AtomicU64,
    shed: AtomicU64,
    published: AtomicU64,
    channel_full: AtomicU64,
    /// When the last producer had handed out (raised or shed) its last event.
    finished: AtomicU64,
    running: AtomicUsize,
    /// The producers' time on a CPU, each read by the producer as it ends, and how many read it.
    producers_cpu_ns: AtomicU64,
    producers_cpu_read: AtomicUsize,
}

/// The producers of one window.
struct Generator<'a> {
    plan: &'a Plan,
    dispatcher: &'a Dispatcher,
    event: EventId,
    template: &'a Template,
    run: u32,
    duration_ns: u64,
}

impl<'a> Generator<'a> {
    fn new(
        plan: &'a Plan,
        dispatcher: &'a Dispatcher,
        event: EventId,
        template: &'a Template,
        run: u32,
        duration_ns: u64,
    ) -> Self {
        Generator {
            plan,
            dispatcher,
            event,
            template,
            run,
            duration_ns,
        }
    }

    /// Runs the window; prints a progress line per second under `progress` (a label). Returns
    /// what the producers did, their lag, the machine's CPU times at the window's start and
    /// each second after it, and at its end, and what the reactor, the producers and the
    /// receivers cost from the producers' start to their end.
    fn run(
        &self,
        sinks: &[Sink],
        progress: Option<&str>,
    ) -> (
        GeneratorCounts,
        Histogram<u64>,
        Vec<Option<CpuTimes>>,
        Option<RunCpu>,
    ) {
        let live = Live::default();
        let start = mono_ns() + START_DELAY_NS;
        let p = self.plan.producers;
        live.running.store(p, Ordering::Relaxed);
        let (threads_before, threads_since) = (ThreadTimes::read(), mono_ns());
        let (lags, cpu) = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..p)
                .map(|k| {
                    let live = &live;
                    std::thread::Builder::new()
                        .name(PRODUCER_THREAD.into())
                        .spawn_scoped(scope, move || self.produce(k, start, live))
                        .expect("spawn a producer")
                })
                .collect();
            let cpu = self.watch(start, sinks, &live, progress);
            let lags = handles
                .into_iter()
                .map(|h| h.join().expect("producers do not panic"))
                .collect::<Vec<_>>();
            (lags, cpu)
        });
        let received = (!sinks.is_empty()).then(|| self.received(sinks));
        let producers_ns = (live.producers_cpu_read.load(Ordering::Relaxed) == p)
            .then(|| live.producers_cpu_ns.load(Ordering::Relaxed));
        let threads_cpu = ThreadTimes::read()
            .zip(threads_before)
            .and_then(|(after, before)| {
                let wall_ns = mono_ns().saturating_sub(threads_since);
                let raised = live.published.load(Ordering::Relaxed);
                after.since(before, wall_ns, producers_ns?, raised, received)
            });
        let mut lag = histogram();
        for h in &lags {
            lag.add(h).expect("same bounds");
        }
        let counts = GeneratorCounts {
            scheduled: live.scheduled.load(Ordering::Relaxed),
            shed: live.shed.load(Ordering::Relaxed),
            published: live.published.load(Ordering::Relaxed),
            channel_full: live.channel_full.load(Ordering::Relaxed),
            // A producer raises each event up to a tick after its time, by design: only
            // finishing later than that is falling behind.
            span_ns: live
                .finished
                .load(Ordering::Relaxed)
                .saturating_sub(start + self.plan.tick.0),
        };
        (counts, lag, cpu, threads_cpu)
    }

    /// One producer: raise what is due each tick, never block, then sleep to the next event.
    fn produce(&self, k: usize, start: u64, live: &Live) -> Histogram<u64> {
        // Counted out however this ends: a producer that panics must not leave `watch` waiting.
        let _running = Running(&live.running);
        let plan = self.plan;
        let publisher = self.dispatcher.publisher();
        let mut pacer = Pacer::new(
            start,
            self.duration_ns,
            plan.rate,
            k as u64,
            plan.producers as u64,
            plan.catchup.0,
        );
        let mut lag = histogram();
        let producer = self.template.producer(self.run, k as u32);
        // When a tick holds several of this producer's events, waking a few tens of us late
        // (timer slack) only delays them as much, which the latency shows: sleep without the
        // yield-spin, which at 1M/s burnt most of a core that the reactor and the sinks need.
        let interval_ns =
            (plan.rate.per_ns as u128 * plan.producers as u128 / plan.rate.events as u128) as u64;
        let precise = interval_ns >= plan.tick.0;
        sleep_until(start);
        loop {
            let now = mono_ns();
            let tick = pacer.poll(now);
            let (mut published, mut full) = (0, 0);
            let mut clock = now;
            // Set when the batch fell behind the catch-up window: the rest goes back to the
            // pacer, which sheds what is late, and the producer polls again without sleeping.
            let mut behind = false;
            for (n, i) in tick.due.clone().enumerate() {
                let intended = pacer.intended(i);
                // The clock is read once per 32 events: reading it per event cost more than
                // building the event.
                if n % 32 == 31 {
                    clock = mono_ns();
                    if pacer.too_late(i, clock) {
                        pacer.hand_back(i);
                        behind = true;
                        break;
                    }
                }
                let params = producer.params(i, intended);
                lag.saturating_record(clock.saturating_sub(intended).max(1));
                match publisher.raise(self.event, params) {
                    Ok(()) => published += 1,
                    Err(RaiseError::QueueFull(..)) => full += 1,
                    Err(e) => panic!("raise failed while the dispatcher runs: {e}"),
                }
            }
            let shed = tick.shed.end - tick.shed.start;
            live.shed.fetch_add(shed, Ordering::Relaxed);
            live.published.fetch_add(published, Ordering::Relaxed);
            live.channel_full.fetch_add(full, Ordering::Relaxed);
            live.scheduled
                .fetch_add(shed + published + full, Ordering::Relaxed);
            match pacer.next_intended() {
                _ if behind => continue,
                Some(next) if precise => sleep_until(next.max(now + plan.tick.0)),
                Some(next) => sleep_coarse(next.max(now + plan.tick.0)),
                None => break,
            }
        }
        // When this producer had handed out its last event: late, when it could not keep up.
        live.finished.fetch_max(mono_ns(), Ordering::Relaxed);
        // All of this thread's CPU time: it was started for this window.
        if let Some(ns) = this_thread_ns() {
            live.producers_cpu_ns.fetch_add(ns, Ordering::Relaxed);
            live.producers_cpu_read.fetch_add(1, Ordering::Relaxed);
        }
        lag
    }

    /// Events of this run the receivers have received so far, over all targets.
    fn received(&self, sinks: &[Sink]) -> u64 {
        let of = |s: &Sink| s.book().runs.get(&self.run).map_or(0, |r| r.received);
        sinks.iter().map(of).sum()
    }

    /// Waits for the producers; prints a progress line every second when asked: the last
    /// second's published and received events (per target), and this run's drops and losses
    /// (datagrams the receivers' kernel dropped) so far, and the p99 of the events received so
    /// far (labelled so: unlike the report's, it does not count the missing as the slowest).
    /// Returns the machine's CPU times read as it begins (just before `start`), each second
    /// after `start` (within the 20 ms this loop sleeps) and when the producers finished.
    fn watch(
        &self,
        start: u64,
        sinks: &[Sink],
        live: &Live,
        progress: Option<&str>,
    ) -> Vec<Option<CpuTimes>> {
        let mut next_line = start + 1_000_000_000;
        let seconds = self.duration_ns.div_ceil(1_000_000_000) as usize;
        let mut cpu = Vec::with_capacity(seconds + 2);
        cpu.push(CpuTimes::read());
        let mut next_cpu = start + 1_000_000_000;
        let (mut last_pub, mut last_recv) = (0u64, 0u64);
        // The dispatcher's counters include the warm-up's.
        let before = self.dispatcher.stats().totals;
        let targets = sinks.len().max(1) as u64;
        // Every event goes to each target: the embedded sinks, or the external targets.
        let fan_out = sinks.len().max(self.plan.external.len()).max(1) as u64;
        let kernel_drops = || -> u64 { sinks.iter().filter_map(Sink::kernel_drops).sum() };
        let lost_before = kernel_drops();
        while live.running.load(Ordering::Relaxed) > 0 {
            std::thread::sleep(Duration::from_millis(20));
            let now = mono_ns();
            if now >= next_cpu {
                cpu.push(CpuTimes::read());
                next_cpu += 1_000_000_000;
            }
            let Some(label) = progress else { continue };
            if now < next_line {
                continue;
            }
            next_line += 1_000_000_000;
            let published = live.published.load(Ordering::Relaxed);
            let (mut recv, mut p99) = (0u64, 0u64);
            for s in sinks {
                let b = s.book();
                if let Some(r) = b.runs.get(&self.run) {
                    recv += r.received;
                    p99 = p99.max(r.latency.value_at_quantile(0.99));
                }
            }
            let totals = self.dispatcher.stats().totals;
            // Per target, as in the report: an event shed or refused by the channel, or dropped
            // or failed at the send for two targets, counts twice.
            let drops = (live.shed.load(Ordering::Relaxed)
                + live.channel_full.load(Ordering::Relaxed))
                * fan_out
                + (totals.dropped() + totals.failed())
                    .saturating_sub(before.dropped() + before.failed());
            // What the host took of the second just sampled (see `cpu` above).
            let steal = match cpu.as_slice() {
                [.., Some(a), Some(b)] => b.since(*a).map(|s| format!("{:.0}%", s.steal * 100.0)),
                _ => None,
            };
            let mut err = std::io::stderr().lock();
            let _ =
                writeln!(
                err,
                "[{label}] {:>4.1}s  target {}/s  published {}/s  received {}/s  lost {}  drops {}  p99(received) {}  steal {}",
                (now - start) as f64 / 1e9,
                human_count(self.plan.rate.per_s()),
                human_count((published - last_pub) as f64),
                human_count(((recv - last_recv) / targets) as f64),
                kernel_drops().saturating_sub(lost_before),
                drops,
                if sinks.is_empty() { "n/a".into() } else { human_ns(p99 as f64) },
                steal.as_deref().unwrap_or("n/a"),
            );
            (last_pub, last_recv) = (published, recv);
        }
        cpu.push(CpuTimes::read());
        cpu
    }
}

/// Counts a producer out of [`Live::running`] when dropped.
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
