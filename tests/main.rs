
mod target;
mod decode;
mod vectors;
