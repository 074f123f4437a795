//! Integration tests, one binary (link time matters on 2 cores): real sockets on loopback and
//! in temp dirs, the real `evdgram` binary, bounded waits.
mod cli;
mod coalesce;
mod config;
mod decode;
mod dispatcher;
mod mi;
mod model;
mod support;
mod target;
mod vectors;
