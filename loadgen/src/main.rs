//! `loadgen`: open-loop stress test and capacity planner for event-datagram.

fn main() {
    std::process::exit(loadgen::main_with(std::env::args_os()));
}
