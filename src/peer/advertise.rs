//! What the answer advertises about the server's transport address.
//! - `--public-port`: the UDP port host candidates advertise when a NodePort or a load
//!   balancer maps another port onto the bound one. webrtc-rs's NAT 1:1 setting rewrites the
//!   address of host candidates, never the port, so the port is rewritten here, in the
//!   answer's `a=candidate:` lines and in every trickled candidate.
//! - The candidates themselves: the answer carries them ([`with_candidates`]) for clients
//!   that never hand trickled candidates to their stack.

/// Which bound port is advertised as which public port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMap {
    /// The port the ICE UDP mux is bound to (`--udp-port`).
    pub bound: u16,
    /// The port clients must send to (`--public-port`).
    pub public: u16,
}

impl PortMap {
    /// The candidate (`candidate:<foundation> <component> udp <priority> <ip> <port> typ host
    /// ...`) with the public port when it is a UDP host candidate on the bound port; any other
    /// candidate (server-reflexive, relayed, TCP, another port) as it is.
    pub fn candidate(&self, candidate: &str) -> String {
        let fields: Vec<&str> = candidate.split(' ').collect();
        let is_ours = fields.len() >= 8
            && fields[2].eq_ignore_ascii_case("udp")
            && fields[6] == "typ"
            && fields[7] == "host"
            && fields[5].parse::<u16>() == Ok(self.bound);
        if !is_ours {
            return candidate.to_owned();
        }
        let public = self.public.to_string();
        let mut fields = fields;
        fields[5] = &public;
        fields.join(" ")
    }

    /// The SDP with [`PortMap::candidate`] applied to each `a=candidate:` line.
    pub fn sdp(&self, sdp: &str) -> String {
        sdp.split_inclusive('\n')
            .map(|line| {
                let (body, end) = split_line_end(line);
                match body.strip_prefix("a=") {
                    Some(candidate) if candidate.starts_with("candidate:") => {
                        format!("a={}{end}", self.candidate(candidate))
                    }
                    _ => line.to_owned(),
                }
            })
            .collect()
    }
}

/// The SDP with `candidates` (`candidate:...`, as trickled) added to its first media section
/// (under BUNDLE every media section shares its transport, as JSEP allows), then
/// `a=end-of-candidates` when gathering is `complete`. Only component 1: the server's answer
/// always has rtcp-mux. A candidate the section already has is not repeated.
pub fn with_candidates(sdp: &str, candidates: &[&str], complete: bool) -> String {
    let lines: Vec<&str> = sdp.split_inclusive('\n').collect();
    let Some(first) = lines.iter().position(|l| l.starts_with("m=")) else {
        return sdp.to_owned();
    };
    let end = lines[first + 1..]
        .iter()
        .position(|l| l.starts_with("m="))
        .map_or(lines.len(), |i| first + 1 + i);
    let section = &lines[first..end];
    let has = |attribute: &str| section.iter().any(|l| split_line_end(l).0 == attribute);
    let line_end = split_line_end(lines[first]).1;
    let line_end = if line_end.is_empty() {
        "\r\n"
    } else {
        line_end
    };
    let mut added = String::new();
    for candidate in candidates {
        let component = candidate.split(' ').nth(1);
        let attribute = format!("a={candidate}");
        if candidate.starts_with("candidate:") && component == Some("1") && !has(&attribute) {
            added.push_str(&attribute);
            added.push_str(line_end);
        }
    }
    if complete && !has("a=end-of-candidates") {
        added.push_str("a=end-of-candidates");
        added.push_str(line_end);
    }
    let mut out = String::with_capacity(sdp.len() + added.len());
    for line in &lines[..end] {
        out.push_str(line);
    }
    // The last line of an SDP always ends in CRLF; one without would glue our first line to it.
    if split_line_end(lines[end - 1]).1.is_empty() {
        out.push_str(line_end);
    }
    out.push_str(&added);
    for line in &lines[end..] {
        out.push_str(line);
    }
    out
}

/// The SDP without its `a=ice-lite` line. The server's agent stays ICE-lite (it answers checks
/// and sends only the triggered checks webrtc-rs's lite agent sends), but a client that knows
/// its peer is lite nominates late: Chromium (semi-aggressive nomination) only on the ping
/// after its pair became writable, about 50 ms later, aioice with a second check; webrtc-rs
/// starts DTLS only at nomination. Told nothing, both nominate on their first check. The
/// client stays controlling either way: it is the offerer.
pub fn without_ice_lite(sdp: &str) -> String {
    sdp.split_inclusive('\n')
        .filter(|line| !split_line_end(line).0.starts_with("a=ice-lite"))
        .collect()
}

/// A line without, and its, `\r\n` or `\n`.
fn split_line_end(line: &str) -> (&str, &str) {
    if let Some(body) = line.strip_suffix("\r\n") {
        (body, "\r\n")
    } else if let Some(body) = line.strip_suffix('\n') {
        (body, "\n")
    } else {
        (line, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: PortMap = PortMap {
        bound: 50000,
        public: 31001,
    };

    #[test]
    fn host_udp_candidates_on_the_bound_port_get_the_public_port() {
        assert_eq!(
            MAP.candidate("candidate:1 1 udp 2130706431 203.0.113.7 50000 typ host"),
            "candidate:1 1 udp 2130706431 203.0.113.7 31001 typ host"
        );
        assert_eq!(
            MAP.candidate("candidate:1 1 UDP 2130706431 10.0.0.1 50000 typ host generation 0"),
            "candidate:1 1 UDP 2130706431 10.0.0.1 31001 typ host generation 0"
        );
    }

    #[test]
    fn other_candidates_are_left_alone() {
        for candidate in [
            // Server-reflexive: the STUN server's view of the port is already public.
            "candidate:2 1 udp 1694498815 198.51.100.1 50000 typ srflx raddr 0.0.0.0 rport 50000",
            "candidate:3 1 udp 16777215 198.51.100.2 3478 typ relay raddr 0.0.0.0 rport 50000",
            "candidate:4 1 tcp 2105524479 10.0.0.1 50000 typ host tcptype passive",
            "candidate:5 1 udp 2130706431 10.0.0.1 50001 typ host",
            "",
            "garbage",
        ] {
            assert_eq!(MAP.candidate(candidate), candidate);
        }
    }

    #[test]
    fn answers_keep_their_line_ends_and_other_lines() {
        let sdp = "v=0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 10.0.0.1 50000 typ host\r\na=end-of-candidates\r\n";
        assert_eq!(
            MAP.sdp(sdp),
            "v=0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 10.0.0.1 31001 typ host\r\na=end-of-candidates\r\n"
        );
        assert_eq!(MAP.sdp("v=0\n"), "v=0\n");
    }

    #[test]
    fn the_ice_lite_line_goes_and_nothing_else() {
        let sdp = "v=0\r\na=ice-lite\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert_eq!(
            without_ice_lite(sdp),
            "v=0\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        );
        assert_eq!(
            without_ice_lite("v=0\r\na=ice-lite:ice-lite\r\n"),
            "v=0\r\n"
        );
    }

    const HOST: &str = "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host";

    #[test]
    fn candidates_go_to_the_first_media_section_then_end_of_candidates() {
        let sdp = "v=0\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n";
        assert_eq!(
            with_candidates(sdp, &[HOST], true),
            format!("v=0\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na={HOST}\r\na=end-of-candidates\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n")
        );
        let one = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
        assert_eq!(
            with_candidates(one, &[HOST], false),
            format!("{one}a={HOST}\r\n"),
            "gathering not complete: no end-of-candidates"
        );
    }

    #[test]
    fn component_2_duplicates_and_non_candidates_are_left_out() {
        let sdp = format!(
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na={HOST}\r\na=end-of-candidates\r\n"
        );
        let rtcp = "candidate:1 2 udp 2130706430 127.0.0.1 50000 typ host";
        assert_eq!(
            with_candidates(&sdp, &[HOST, rtcp, "", "garbage"], true),
            sdp
        );
        assert_eq!(
            with_candidates("v=0\r\n", &[HOST], true),
            "v=0\r\n",
            "no media section"
        );
    }
}
