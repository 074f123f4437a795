//! `loadgen`: open-loop stress test for event-datagram (placeholder until its own issue).

fn main() {
    eprintln!("loadgen: not built yet (see issue 5)");
    std::process::exit(1);
}
