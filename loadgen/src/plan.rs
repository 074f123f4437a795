//! A resolved plan: built-in defaults, then the config file, then flags.

use std::collections::BTreeMap;
use std::time::Duration;

use event_datagram::{BackendChoice, Coalesce, DispatcherConfig, Format, InvalidCoalesce, Target};

use crate::cli::Common;
use crate::config::{FileConfig, Thresholds, TransportChoice};
use crate::payload::{Template, MAX_PRODUCERS};
use crate::result::Transport;
use crate::units::{human_ns, Nanos, Rate, MAX_DURATION, MAX_DURATION_TEXT};
use crate::Usage;

/// The default sweep: sizes up to the datagram ceiling.
pub const DEFAULT_SIZES: [usize; 5] = [64, 512, 1400, 8192, 65_457];

/// The default sweep in `format`: a size below the format's smallest event becomes that
/// smallest event (64 is 107 in jsonrpc), once. Sizes given explicitly are not changed: one
/// too small for the format is an error.
pub fn default_sizes(format: Format) -> Vec<usize> {
    let min = Template::min_size(format);
    let mut sizes: Vec<usize> = DEFAULT_SIZES.iter().map(|&s| s.max(min)).collect();
    sizes.dedup();
    sizes
}

/// `--coalesce`'s datagram size limit: the largest datagram.
pub const DEFAULT_COALESCE_BYTES: usize = event_datagram::MAX_DATAGRAM;
/// `--coalesce`'s delay limit: well under the 5 ms p99 a coalesced 1M/s run is held to.
pub const DEFAULT_COALESCE_DELAY: Nanos = Nanos(1_000_000);

/// `--catchup`: longer than the stalls a shared machine's host puts its virtual CPUs through
/// (10-47 ms measured on the project's machines), so that a run takes them up and their events
/// arrive with their real lateness in the latency instead of being shed (at 10 ms most 1M/s
/// runs there shed a few thousand); short enough that an overloaded generator, whose lag only
/// grows, still ends its run soon after its window.
pub const DEFAULT_CATCHUP: Nanos = Nanos(100_000_000);

/// How much longer than the tick the catch-up window must be: room for a late wake-up.
pub const MIN_CATCHUP_MARGIN: Nanos = Nanos(1_000_000);

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Events per second.
    pub rate: Rate,
    /// Measured window.
    pub duration: Nanos,
    /// Warm-up.
    pub warmup: Nanos,
    /// Sizes, one run each.
    pub sizes: Vec<usize>,
    /// Transports, one run each.
    pub transports: Vec<Transport>,
    /// Receivers per transport.
    pub targets: usize,
    /// Producer threads.
    pub producers: usize,
    /// Wire format.
    pub format: Format,
    /// Backend.
    pub backend: BackendChoice,
    /// Producers' tick.
    pub tick: Nanos,
    /// Catch-up window.
    pub catchup: Nanos,
    /// Channel capacity.
    pub queue_capacity: usize,
    /// Drain bound after each run.
    pub drain_timeout: Nanos,
    /// Coalescing of the sinks' subscriptions (`None`: one event per datagram).
    pub coalesce: Option<Coalesce>,
    /// UDP GSO in the dispatcher.
    pub udp_gso: bool,
    /// External targets (none: embedded sinks).
    pub external: Vec<Target>,
    /// Progress lines on stderr.
    pub progress: bool,
    /// Thresholds.
    pub thresholds: Thresholds,
    /// CLOCK_MONOTONIC at loadgen's start (the interval log's time base).
    pub origin_ns: u64,
    /// How messages name the settings that came from the config file (`targets (FILE line
    /// 3)`), by key; the others are named by their flag (`--targets`).
    names: BTreeMap<&'static str, String>,
}

impl Plan {
    /// Resolves `flags` over `file` over the defaults, and checks the result.
    pub fn resolve(
        flags: &Common,
        file: &FileConfig,
        external: Option<&[String]>,
    ) -> Result<Plan, Usage> {
        // The keys whose value is the file's: a message about one names the file, key and line.
        let mut names = BTreeMap::new();
        // (key, given as a flag, set in the file)
        let settings = [
            ("rate", flags.rate.is_some(), file.rate.is_some()),
            (
                "duration",
                flags.duration.is_some(),
                file.duration.is_some(),
            ),
            ("warmup", flags.warmup.is_some(), file.warmup.is_some()),
            ("sizes", flags.sizes.is_some(), file.sizes.is_some()),
            ("targets", flags.targets.is_some(), file.targets.is_some()),
            (
                "producers",
                flags.producers.is_some(),
                file.producers.is_some(),
            ),
            ("tick", flags.tick.is_some(), file.tick.is_some()),
            ("catchup", flags.catchup.is_some(), file.catchup.is_some()),
            (
                "queue_capacity",
                flags.queue_capacity.is_some(),
                file.queue_capacity.is_some(),
            ),
            (
                "coalesce_bytes",
                flags.coalesce_bytes.is_some(),
                file.coalesce_bytes.is_some(),
            ),
            (
                "coalesce_delay",
                flags.coalesce_delay.is_some(),
                file.coalesce_delay.is_some(),
            ),
            (
                "targets_external",
                external.is_some(),
                file.targets_external.is_some(),
            ),
        ];
        for (key, flag, in_file) in settings {
            if !flag && in_file {
                names.insert(key, file.name_of(key));
            }
        }
        let name = |key: &str| setting_name(&names, key);
        let transport = flags
            .transport
            .or(file.transport)
            .unwrap_or(TransportChoice::Both);
        let external_specs = external
            .map(<[String]>::to_vec)
            .or_else(|| file.targets_external.clone())
            .unwrap_or_default();
        let external = external_specs
            .iter()
            .map(|s| {
                Target::parse(s).map_err(|e| Usage(format!("{}: {e}", name("targets_external"))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // `transport` and `targets` say which receivers loadgen embeds: with external targets
        // there are none, and a setting that would be silently ignored is refused.
        if !external.is_empty() {
            for (key, flag, in_file) in [
                (
                    "transport",
                    flags.transport.is_some(),
                    file.transport.is_some(),
                ),
                ("targets", flags.targets.is_some(), file.targets.is_some()),
            ] {
                if flag || in_file {
                    let this = if flag {
                        format!("--{key}")
                    } else {
                        file.name_of(key)
                    };
                    return Err(Usage(format!(
                        "{this} is for the embedded receivers: with {} loadgen sends to those \
                         sockets only, each run to all of them (remove {this})",
                        name("targets_external")
                    )));
                }
            }
        }
        let coalesce_bytes = flags.coalesce_bytes.or(file.coalesce_bytes);
        let coalesce_delay = flags.coalesce_delay.or(file.coalesce_delay);
        // Tuning either limit on the command line implies coalescing.
        let coalesce_on = flags.coalesce
            || flags.coalesce_bytes.is_some()
            || flags.coalesce_delay.is_some()
            || file.coalesce.unwrap_or(false);
        let coalesce = if coalesce_on {
            let bytes = coalesce_bytes.unwrap_or(DEFAULT_COALESCE_BYTES);
            let delay = coalesce_delay.unwrap_or(DEFAULT_COALESCE_DELAY);
            let flag = |e: InvalidCoalesce| match e {
                InvalidCoalesce::MaxBytes(_) => Usage(format!("{}: {e}", name("coalesce_bytes"))),
                _ => Usage(format!(
                    "{}: at most {}",
                    name("coalesce_delay"),
                    human_ns(Coalesce::MAX_DELAY.as_nanos() as f64)
                )),
            };
            Some(Coalesce::new(bytes, Duration::from_nanos(delay.0)).map_err(flag)?)
        } else {
            None
        };
        let format = flags.format.or(file.format).unwrap_or_default();
        let plan = Plan {
            rate: flags.rate.or(file.rate).unwrap_or(Rate::per_sec(20_000)),
            duration: flags
                .duration
                .or(file.duration)
                .unwrap_or(Nanos(2_000_000_000)),
            warmup: flags.warmup.or(file.warmup).unwrap_or(Nanos(300_000_000)),
            sizes: flags
                .sizes
                .clone()
                .or_else(|| file.sizes.clone())
                .unwrap_or_else(|| default_sizes(format)),
            transports: match transport {
                TransportChoice::Udp => vec![Transport::Udp],
                TransportChoice::Unix => vec![Transport::Unix],
                TransportChoice::Both => vec![Transport::Udp, Transport::Unix],
            },
            targets: flags.targets.or(file.targets).unwrap_or(1),
            producers: flags.producers.or(file.producers).unwrap_or(1),
            format,
            backend: flags.backend.or(file.backend).unwrap_or_default(),
            tick: flags.tick.or(file.tick).unwrap_or(Nanos(100_000)),
            catchup: flags.catchup.or(file.catchup).unwrap_or(DEFAULT_CATCHUP),
            queue_capacity: flags
                .queue_capacity
                .or(file.queue_capacity)
                .unwrap_or(16_384),
            drain_timeout: file.drain_timeout.unwrap_or(Nanos(2_000_000_000)),
            coalesce,
            udp_gso: !flags.no_gso && file.udp_gso.unwrap_or(true),
            external,
            progress: flags.progress || std::io::IsTerminal::is_terminal(&std::io::stderr()),
            thresholds: file.thresholds.clone().unwrap_or_default(),
            origin_ns: crate::clock::mono_ns(),
            names,
        };
        plan.check()?;
        Ok(plan)
    }

    /// How messages name the setting `key`: its flag (`--queue-capacity`), or, when its value
    /// came from the config file, the key, file and line (`queue_capacity (FILE line 3)`).
    pub fn name(&self, key: &str) -> String {
        setting_name(&self.names, key)
    }

    fn check(&self) -> Result<(), Usage> {
        let bad = |m: String| Err(Usage(m));
        for &size in &self.sizes {
            if let Err(e) = Template::new(self.format, size) {
                let e = if size > event_datagram::MAX_DATAGRAM {
                    format!(
                        "size {size} is over the {}-byte datagram limit",
                        event_datagram::MAX_DATAGRAM
                    )
                } else {
                    e.to_string()
                };
                // A flag's sizes were checked by its parser: this one's message says enough.
                return bad(match self.names.get("sizes") {
                    Some(name) => format!("{name}: {e}"),
                    None => e,
                });
            }
        }
        if self.sizes.is_empty() {
            return bad(format!("{}: at least one size", self.name("sizes")));
        }
        // A coalesced datagram holds whole events, and an event over the limit goes alone: a
        // limit under the smallest event coalesces nothing, while the report says it does.
        if let (Some(c), Some(&smallest)) = (self.coalesce, self.sizes.iter().min()) {
            if c.max_bytes() < smallest {
                return bad(format!(
                    "{} {} is too small: at least {smallest} bytes, a whole event of the \
                     smallest size run (a coalesced datagram holds whole events; an event \
                     over the limit is sent alone)",
                    self.name("coalesce_bytes"),
                    c.max_bytes()
                ));
            }
        }
        // Reports are named by size (`lat-64-udp.hgrm`, `64B-udp` in the interval log).
        if let Some(size) = (1..self.sizes.len()).find_map(|i| {
            let size = self.sizes[i];
            self.sizes[..i].contains(&size).then_some(size)
        }) {
            return bad(format!(
                "{}: {size} is given twice (each size's reports are named by it)",
                self.name("sizes")
            ));
        }
        if self.targets == 0 || self.targets > 64 {
            return bad(format!("{}: 1 to 64", self.name("targets")));
        }
        if self.producers == 0 || self.producers > MAX_PRODUCERS {
            return bad(format!("{}: 1 to {MAX_PRODUCERS}", self.name("producers")));
        }
        if self.duration.0 == 0 {
            return bad(format!("{}: must be above 0", self.name("duration")));
        }
        for (key, d) in [("duration", self.duration), ("warmup", self.warmup)] {
            let flag = self.name(key);
            if d > MAX_DURATION {
                return bad(format!(
                    "{flag} {d} is too long: at most {MAX_DURATION_TEXT}"
                ));
            }
            // Each producer's sequence numbers would wrap, and read as duplicates.
            let per_producer = self.rate.per_s() / self.producers as f64 * d.0 as f64 / 1e9;
            if per_producer >= crate::payload::MAX_EVENTS_PER_PRODUCER as f64 {
                return bad(format!(
                    "{} x {flag} {d}: {per_producer:.3e} events per producer, more than \
                     its {:.0e} sequence numbers (give more --producers or a shorter window)",
                    self.name("rate"),
                    crate::payload::MAX_EVENTS_PER_PRODUCER as f64
                ));
            }
        }
        if self.tick.0 == 0 || self.tick.0 > 1_000_000_000 {
            return bad(format!("{}: above 0 and at most 1s", self.name("tick")));
        }
        // An event waits for its producer's next tick, and the wake-up itself comes late by
        // the timer slack and the scheduler: a window within that sheds on an idle machine.
        if self.catchup.0 < self.tick.0 + MIN_CATCHUP_MARGIN.0 {
            return bad(format!(
                "{} {} must be at least {} {} + {}: a producer wakes once per tick, \
                 so an event waits up to a tick, plus the wake-up's own delay, before it is \
                 raised, and events later than --catchup are shed",
                self.name("catchup"),
                self.catchup,
                self.name("tick"),
                self.tick,
                MIN_CATCHUP_MARGIN
            ));
        }
        if self.queue_capacity == 0 || self.queue_capacity > DispatcherConfig::MAX_QUEUE_CAPACITY {
            return bad(format!(
                "{}: 1 to {}",
                self.name("queue_capacity"),
                DispatcherConfig::MAX_QUEUE_CAPACITY
            ));
        }
        Ok(())
    }
}

/// How messages name the setting `key`: as `names` has it (a value from the config file:
/// key, file and line), else by its flag (`--queue-capacity`).
fn setting_name(names: &BTreeMap<&'static str, String>, key: &str) -> String {
    names
        .get(key)
        .cloned()
        .unwrap_or_else(|| format!("--{}", key.replace('_', "-")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(flags: Common) -> Result<Plan, Usage> {
        Plan::resolve(&flags, &FileConfig::default(), None)
    }

    /// `loadgen --format jsonrpc` ran the default sweep from 64 bytes and exited 2 on it: the
    /// default starts at the format's smallest event; an explicit 64 is still refused.
    #[test]
    fn the_default_sweep_starts_at_the_formats_smallest_event() {
        let jsonrpc = Common {
            format: Some(Format::Jsonrpc),
            ..Common::default()
        };
        let plan = resolve(jsonrpc.clone()).unwrap();
        assert_eq!(plan.sizes, [107, 512, 1400, 8192, 65_457]);
        assert_eq!(resolve(Common::default()).unwrap().sizes, DEFAULT_SIZES);
        let explicit = Common {
            sizes: Some(vec![64]),
            ..jsonrpc
        };
        let e = resolve(explicit).unwrap_err();
        assert!(e.0.contains("107"), "{e}");
    }

    /// The default sweep's length said in the help, README, docs/loadgen.md and
    /// config/loadgen.yaml (it said 30 s in some, 45 s in others): its schedule is 10 runs of
    /// 0.3 + 2 s, 23 s, and each run takes 2.3 to 2.8 s with its set-up and drain.
    #[test]
    fn every_place_gives_the_default_sweep_the_same_length() {
        let plan = resolve(Common::default()).unwrap();
        let runs = (plan.sizes.len() * plan.transports.len()) as u64;
        let schedule_s = runs * (plan.warmup.0 + plan.duration.0) / 1_000_000_000;
        assert_eq!(schedule_s, 23);
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        let help = <crate::cli::Cli as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        for (place, text) in [
            ("--help", help),
            ("README.md", read("README.md")),
            ("docs/loadgen.md", read("docs/loadgen.md")),
            ("config/loadgen.yaml", read("config/loadgen.yaml")),
        ] {
            let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(flat.contains("about 25 s"), "{place}");
            for other in ["about 30 s", "~30 s", "about 45 s"] {
                assert!(!flat.contains(other), "{place} says {other}");
            }
        }
    }

    /// `--coalesce-bytes 10` was accepted, coalesced nothing (each event is larger) and the
    /// report said "up to 10 bytes": the limit must hold one event of the smallest size.
    #[test]
    fn a_coalescing_limit_under_the_smallest_event_is_refused() {
        let flags = |bytes, sizes: &[usize]| Common {
            coalesce_bytes: Some(bytes),
            sizes: Some(sizes.to_vec()),
            ..Common::default()
        };
        let e = resolve(flags(10, &[64])).unwrap_err();
        assert!(
            e.0.starts_with("--coalesce-bytes 10 is too small: at least 64 bytes"),
            "{e}"
        );
        let e = resolve(flags(199, &[1400, 200])).unwrap_err();
        assert!(e.0.contains("at least 200 bytes"), "{e}");
        assert!(resolve(flags(64, &[64, 1400])).is_ok());
        let e = resolve(Common {
            coalesce_bytes: Some(10),
            ..Common::default()
        })
        .unwrap_err();
        assert!(e.0.contains("at least 64 bytes"), "{e}");
    }
}
