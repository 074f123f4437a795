//! # loadgen
//!
//! Open-loop stress test and capacity planner for event-datagram (see `shared/LOADGEN.md` and
//! `docs/loadgen.md`). Events are raised through the library's public API on a schedule of
//! intended send times (wrk2's method); embedded receivers decode them with the library's
//! decoder and record latency from intended time to receipt, per size and transport.
//!
//! `main.rs` only calls [`main_with`]; everything here is testable in-process.
#![deny(unsafe_code)]

/// `eprintln!` that ignores a failed write: `eprintln!` panics (exit 101) when stderr is a
/// closed pipe, and loadgen's exit codes must hold whoever reads its stderr, or nobody.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `eprint!` that ignores a failed write (see `errln!`).
macro_rules! errprint {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

pub mod capacity;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cpu;
pub mod measure;
pub mod payload;
pub mod phase;
pub mod plan;
pub mod report;
pub mod result;
pub mod schedule;
pub mod sink;
pub mod sinkd;
mod sys;
pub mod threads;
pub mod thresholds;
pub mod units;

use std::io::Write;

use anyhow::Context;
use clap::Parser;

use crate::cli::{Cli, Command, RunArgs};
use crate::config::{FileConfig, Thresholds};
use crate::plan::Plan;
use crate::result::RunResult;

/// Exit codes.
pub mod exit {
    /// Every run passed.
    pub const OK: i32 = 0;
    /// Something failed (a socket, the dispatcher, a report file).
    pub const FAILURE: i32 = 1;
    /// Usage or configuration error.
    pub const USAGE: i32 = 2;
    /// A threshold failed.
    pub const THRESHOLD: i32 = 3;
}

/// A usage or configuration error (exit 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// What a command produced.
#[derive(Debug)]
pub struct Outcome {
    /// The runs (empty for `sink`).
    pub runs: Vec<RunResult>,
    /// Thresholds that failed.
    pub failed: Vec<String>,
}

/// Parses `args` (including the program name), runs, prints; returns the exit code.
pub fn main_with<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    match execute(cli) {
        Ok(o) if o.failed.is_empty() => exit::OK,
        Ok(o) => {
            for f in &o.failed {
                errln!("loadgen: threshold failed: {f}");
            }
            exit::THRESHOLD
        }
        Err(e) if e.downcast_ref::<Usage>().is_some() => {
            errln!("loadgen: {e:#}");
            exit::USAGE
        }
        Err(e) => {
            errln!("loadgen: {e:#}");
            exit::FAILURE
        }
    }
}

/// Runs a parsed command line.
pub fn execute(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        None => run(&cli.run),
        Some(Command::Run(args)) => run(&args),
        Some(Command::Capacity(args)) => capacity::run(&args),
        Some(Command::Sink(args)) => sinkd::run(&args).map(|()| Outcome {
            runs: Vec::new(),
            failed: Vec::new(),
        }),
    }
}

/// Reads `--config` if given.
pub fn file_config(path: Option<&std::path::Path>) -> Result<FileConfig, Usage> {
    path.map_or(Ok(FileConfig::default()), |p| {
        FileConfig::from_file(p).map_err(Usage)
    })
}

/// `loadgen run`: every size and transport, then the reports and the thresholds.
pub fn run(args: &RunArgs) -> anyhow::Result<Outcome> {
    let file = file_config(args.common.config.as_deref())?;
    let plan = Plan::resolve(&args.common, &file, args.targets_external.as_deref())?;
    let thresholds = Thresholds {
        max_p99: args.max_p99.or(plan.thresholds.max_p99),
        max_p999: args.max_p999.or(plan.thresholds.max_p999),
        max_loss: args.max_loss.or(plan.thresholds.max_loss),
        min_achieved: args.min_achieved.or(plan.thresholds.min_achieved),
    };
    // (key, given as a flag, set at all): a threshold is named by its flag, or where the file
    // set it.
    let given = [
        (
            "max_p99",
            args.max_p99.is_some(),
            thresholds.max_p99.is_some(),
        ),
        (
            "max_p999",
            args.max_p999.is_some(),
            thresholds.max_p999.is_some(),
        ),
        (
            "max_loss",
            args.max_loss.is_some(),
            thresholds.max_loss.is_some(),
        ),
        (
            "min_achieved",
            args.min_achieved.is_some(),
            thresholds.min_achieved.is_some(),
        ),
    ];
    let name = |key: &str| {
        let flagged = given.iter().any(|&(k, flag, _)| k == key && flag);
        if flagged || file.origin.is_none() {
            thresholds::flag(key)
        } else {
            file.name_in_section("thresholds", key)
        }
    };
    // With external targets the latency and the loss are measured by `loadgen sink`, in its
    // report; here they are unknown, and a threshold on them could only fail or pass blindly.
    if !plan.external.is_empty() {
        let blind: Vec<String> = given
            .iter()
            .filter(|&&(key, _, set)| set && key != "min_achieved")
            .map(|&(key, ..)| name(key))
            .collect();
        if !blind.is_empty() {
            return Err(Usage(format!(
                "{} need(s) embedded receivers: with --targets-external, `loadgen sink` \
                 measures latency and loss",
                blind.join(", ")
            ))
            .into());
        }
    }
    check_report_paths(args, &plan)?;
    let (runs, backend) = run_plan(&plan)?;
    write_reports(args, &runs, &backend, plan.origin_ns)?;
    let failed = thresholds::check(&thresholds, &runs, name);
    Ok(Outcome { runs, failed })
}

/// The (size, transport) of each run of `plan`, in order.
pub fn runs_of(plan: &Plan) -> Vec<(usize, result::Transport)> {
    let transports = if plan.external.is_empty() {
        plan.transports.clone()
    } else {
        vec![result::Transport::of_all(&plan.external)]
    };
    plan.sizes
        .iter()
        .flat_map(|&size| transports.iter().map(move |&t| (size, t)))
        .collect()
}

/// Checks, before the first run, that a report can be written at `path` (given as `flag`): its
/// directory exists and the file can be created or written. A file that was not there is
/// created and removed again; one that was is opened for writing, not truncated; a directory
/// is an error; anything else there (a FIFO, `/dev/stdout`, a symbolic link) is left to the
/// final write.
pub fn check_writable(flag: &str, path: &std::path::Path) -> Result<(), Usage> {
    use std::fs::OpenOptions;
    // Only a regular file, or nothing, is tried (a directory fails below): opening a FIFO
    // would wait for its reader (and end it), and a link may point at a file the final write
    // is to create.
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return Ok(());
    }
    let created = OpenOptions::new().write(true).create_new(true).open(path);
    let result = match created {
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            OpenOptions::new().write(true).open(path).map(drop)
        }
        Err(e) => Err(e),
    };
    result.map_err(|e| Usage(format!("{flag}: cannot write {}: {e}", path.display())))
}

/// Checks every report file of `args` before `plan` runs: a typo must not throw a long run
/// away at its end.
fn check_report_paths(args: &RunArgs, plan: &Plan) -> Result<(), Usage> {
    use std::path::Path;
    if let Some(json) = args.common.json.as_deref().filter(|&j| j != "-") {
        check_writable("--json", Path::new(json))?;
    }
    if let Some(prefix) = &args.hgrm {
        for (size, t) in runs_of(plan) {
            check_writable("--hgrm", Path::new(&report::hgrm::path_of(prefix, size, t)))?;
        }
    }
    if let Some(path) = &args.hlog {
        check_writable("--hlog", path)?;
    }
    if let Some(path) = &args.plot {
        check_writable("--plot", path)?;
    }
    Ok(())
}

/// Writes `text` to stdout and flushes it. A closed or broken stdout (`loadgen | head -1`) is
/// an error with a message, where `print!` would panic (exit 101).
pub(crate) fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// Runs every (size, transport) of `plan`; returns the results and the backend's name.
pub fn run_plan(plan: &Plan) -> anyhow::Result<(Vec<RunResult>, String)> {
    let mut runs = Vec::new();
    for (size, t) in runs_of(plan) {
        let r = phase::run_phase(plan, size, t)?;
        for w in &r.warnings {
            errln!("loadgen: WARNING: {w}");
        }
        runs.push(r);
    }
    Ok((runs, backend_name(plan)))
}

/// The backend a dispatcher with this plan's choice runs on.
pub(crate) fn backend_name(plan: &Plan) -> String {
    let config = event_datagram::DispatcherConfig {
        backend: plan.backend,
        ..Default::default()
    };
    event_datagram::Dispatcher::start(config)
        .map(|d| d.shutdown().backend.to_string())
        .unwrap_or_else(|_| format!("{:?}", plan.backend).to_lowercase())
}

fn write_reports(
    args: &RunArgs,
    runs: &[RunResult],
    backend: &str,
    origin_ns: u64,
) -> anyhow::Result<()> {
    // The files first: a closed stdout (`| head -0`) must not cost them.
    let json_to_stdout = args.common.json.as_deref() == Some("-");
    if let Some(dest) = args.common.json.as_deref().filter(|_| !json_to_stdout) {
        let json = report::json::render(runs, backend);
        std::fs::write(dest, json).with_context(|| format!("cannot write {dest}"))?;
    }
    if let Some(prefix) = &args.hgrm {
        for r in runs {
            let path = report::hgrm::path(prefix, r);
            std::fs::write(&path, report::hgrm::render(r))
                .with_context(|| format!("cannot write {path}"))?;
        }
    }
    if let Some(path) = &args.hlog {
        let text = report::hlog::render(runs, origin_ns)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        report::plot::draw(runs, path)
            .with_context(|| format!("cannot draw {}", path.display()))?;
    }
    let table = report::table::render(runs, backend);
    if json_to_stdout {
        errprint!("{table}");
        write_stdout(&report::json::render(runs, backend))
    } else {
        write_stdout(&table)
    }
}
