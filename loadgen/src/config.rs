//! The YAML configuration file (`config/loadgen.yaml`): every key optional, unknown keys refused;
//! command-line flags override it.

use std::path::Path;

use event_datagram::{BackendChoice, Format};
use serde::Deserialize;

use crate::units::{Fraction, Nanos, Rate};

/// Which transports a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TransportChoice {
    /// UDP on loopback.
    Udp,
    /// UNIX datagram sockets in a temp dir.
    Unix,
    /// Both, one run each.
    Both,
}

/// The file's contents. `None` means "not set here" (flag or built-in default applies).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Events per second.
    pub rate: Option<Rate>,
    /// Measured window per run.
    pub duration: Option<Nanos>,
    /// Unmeasured warm-up per run.
    pub warmup: Option<Nanos>,
    /// Datagram sizes, one run each.
    pub sizes: Option<Vec<usize>>,
    /// Transports.
    pub transport: Option<TransportChoice>,
    /// Receivers per transport.
    pub targets: Option<usize>,
    /// Producer threads.
    pub producers: Option<usize>,
    /// Wire format.
    pub format: Option<Format>,
    /// Dispatcher backend.
    pub backend: Option<BackendChoice>,
    /// Producers' tick.
    pub tick: Option<Nanos>,
    /// Bounded catch-up: events later than this are shed.
    pub catchup: Option<Nanos>,
    /// The dispatcher's channel capacity.
    pub queue_capacity: Option<usize>,
    /// How long receivers may drain after a run.
    pub drain_timeout: Option<Nanos>,
    /// Coalesce events into datagrams (see `coalesce_bytes`, `coalesce_delay`).
    pub coalesce: Option<bool>,
    /// Coalesced datagrams' size limit, bytes.
    pub coalesce_bytes: Option<usize>,
    /// How long a coalesced datagram waits for more events.
    pub coalesce_delay: Option<Nanos>,
    /// UDP GSO in the dispatcher.
    pub udp_gso: Option<bool>,
    /// External targets instead of embedded sinks.
    pub targets_external: Option<Vec<String>>,
    /// Thresholds.
    pub thresholds: Option<Thresholds>,
    /// Where the file is, and the line of each top-level key (`None`: no file).
    #[serde(skip)]
    pub origin: Option<Origin>,
}

/// Where a [`FileConfig`] came from, to name a value's file, key and line in a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub path: std::path::PathBuf,
    /// The line (from 1) of each top-level key written `key:` at the start of a line.
    pub lines: std::collections::BTreeMap<String, usize>,
}

impl Origin {
    /// `path`'s origin, with the lines of the block-style top-level keys of `text`.
    pub fn of(path: &Path, text: &str) -> Origin {
        let mut lines = std::collections::BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let starts_a_key = line
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if let Some((key, _)) = line.split_once(':').filter(|_| starts_a_key) {
                lines.entry(key.trim().to_owned()).or_insert(i + 1);
            }
        }
        Origin {
            path: path.to_owned(),
            lines,
        }
    }
}

/// Thresholds: a run that misses one makes loadgen exit 3.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Highest acceptable p99 latency.
    pub max_p99: Option<Nanos>,
    /// Highest acceptable p99.9 latency.
    pub max_p999: Option<Nanos>,
    /// Highest acceptable loss (`1 - received/scheduled`).
    pub max_loss: Option<Fraction>,
    /// Lowest acceptable achieved rate, as a fraction of the target.
    pub min_achieved: Option<Fraction>,
}

impl FileConfig {
    /// Parses YAML; the message names the line and the key (as the library's configuration
    /// does).
    pub fn from_yaml(text: &str) -> Result<FileConfig, String> {
        event_datagram::yaml::from_str(text, "config")
    }

    /// Reads and parses a file.
    pub fn from_file(path: &Path) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut config =
            event_datagram::yaml::from_str::<FileConfig>(&text, &path.display().to_string())
                .map_err(|e| format!("{}: {e}", path.display()))?;
        config.origin = Some(Origin::of(path, &text));
        Ok(config)
    }

    /// How a message names the value of `key` of `section`, set in this file:
    /// `section.key (FILE)`.
    pub fn name_in_section(&self, section: &str, key: &str) -> String {
        match &self.origin {
            Some(o) => format!("{section}.{key} ({})", o.path.display()),
            None => format!("{section}.{key} (config)"),
        }
    }

    /// How a message names the value of `key`, set in this file: `key (FILE line N)`, or
    /// `key (FILE)` when the key is not at the start of a line (flow style).
    pub fn name_of(&self, key: &str) -> String {
        match &self.origin {
            Some(o) => match o.lines.get(key) {
                Some(line) => format!("{key} ({} line {line})", o.path.display()),
                None => format!("{key} ({})", o.path.display()),
            },
            None => format!("{key} (config)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_parses_sets_every_key_and_comments_each() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/loadgen.yaml");
        let c = FileConfig::from_file(&path).unwrap();
        let t = c.thresholds.clone().unwrap();
        let set = [
            c.rate.is_some(),
            c.duration.is_some(),
            c.warmup.is_some(),
            c.sizes.is_some(),
            c.transport.is_some(),
            c.targets.is_some(),
            c.producers.is_some(),
            c.format.is_some(),
            c.backend.is_some(),
            c.tick.is_some(),
            c.catchup.is_some(),
            c.queue_capacity.is_some(),
            c.drain_timeout.is_some(),
            c.coalesce.is_some(),
            c.coalesce_bytes.is_some(),
            c.coalesce_delay.is_some(),
            c.udp_gso.is_some(),
            c.targets_external.is_some(),
            t.max_p99.is_some(),
            t.max_p999.is_some(),
            t.max_loss.is_some(),
            t.min_achieved.is_some(),
        ];
        assert!(set.iter().all(|&s| s), "{c:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut previous = "";
        for line in text.lines() {
            let key = line.trim_start();
            if !key.is_empty() && !key.starts_with('#') && !key.starts_with('-') {
                assert!(
                    previous.trim_start().starts_with('#'),
                    "{line:?} has no comment"
                );
            }
            previous = line;
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_key() {
        let e = FileConfig::from_yaml("rate: 10k\nrat: 3\n").unwrap_err();
        assert!(e.contains("rat"), "{e}");
        let e = FileConfig::from_yaml("duration: soon\n").unwrap_err();
        assert!(e.contains("soon"), "{e}");
    }
}
