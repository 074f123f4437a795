
mod target;
mod cli;
mod decode;
mod vectors;
mod dispatcher;
mod support;
