//! What the answer advertises about the server's transport address.
//! - `--public-port`: the UDP port host candidates advertise when a NodePort or a load
//!   balancer maps another port onto the bound one. webrtc-rs's NAT 1:1 setting rewrites the
//!   address of host candidates, never the port, so the port is rewritten here, in the
//!   answer's `a=candidate:` lines (through [`super::sdp::Sdp::map_candidates`]) and in
//!   every trickled candidate.

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
}
