//! Reports: the table people read, and the files tools read.

pub mod hgrm;
pub mod hlog;
pub mod json;
pub mod plot;
pub mod table;

use crate::result::RunResult;

/// What a run's latency files (`.hgrm`, `.hlog`, the plot) must say when events did not
/// arrive: their histograms hold the received events only, while the table and the JSON count
/// the missing ones as the slowest. `None` when nothing is missing.
pub fn received_only(r: &RunResult) -> Option<String> {
    let missing = r.missing().filter(|&m| m > 0)?;
    Some(format!(
        "latency of the received events only: {missing} of {} scheduled events did not arrive \
         (shed, dropped or lost); the table and JSON count them as slower than any received",
        r.scheduled
    ))
}
