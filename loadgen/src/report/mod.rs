//! Reports: the table people read, and the files tools read.

pub mod hgrm;
pub mod hlog;
pub mod json;
pub mod plot;
pub mod table;
