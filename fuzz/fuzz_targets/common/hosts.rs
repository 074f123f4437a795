//! Inputs the targets leave out: socket specs that name a host.

/// Whether a UDP socket spec in `text` names its host rather than giving its address. A name
/// is looked up (with no DNS here, each lookup waits for its timeout: the run would crawl), and
/// glibc's resolver keeps a few bytes that the leak checker reports; so the targets skip those
/// inputs, and fuzz addresses and UNIX paths.
pub fn names_a_host(text: &str) -> bool {
    text.match_indices("udp:").any(|(at, _)| {
        let rest = &text[at + 4..];
        let host = match rest.strip_prefix('[') {
            // `[::1]:9`
            Some(v6) => v6.split(']').next().unwrap_or(""),
            // `127.0.0.1:9`: up to the port, or to a byte no address holds (a quote, a comma).
            None => rest
                .split(|c: char| c == ':' || !(c.is_ascii_alphanumeric() || ".-_%".contains(c)))
                .next()
                .unwrap_or(""),
        };
        host.parse::<std::net::IpAddr>().is_err()
    })
}
