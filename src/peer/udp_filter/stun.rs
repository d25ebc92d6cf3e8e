//! Just enough STUN (RFC 5389) to tell whose ICE check a datagram is, without allocating:
//! the header, then a walk over the attributes to the USERNAME.

/// RFC 5389 §6: the fixed value of bytes 4..8 of every STUN message.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const HEADER_LEN: usize = 20;
const ATTR_USERNAME: u16 = 0x0006;

/// What a datagram from an unknown address is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Datagram<'a> {
    /// Not STUN (DTLS, RTP, junk): nothing an unknown address may send first.
    NotStun,
    /// STUN's first two bits and magic cookie, but a length or an attribute that does not
    /// add up, or a USERNAME that is not UTF-8.
    Malformed,
    /// STUN without a USERNAME (a plain binding request, a response, an indication).
    NoUsername,
    /// STUN whose USERNAME is `<local ufrag>:<remote ufrag>`: the local part.
    Check { local_ufrag: &'a str },
}

/// Classifies one datagram.
pub(crate) fn classify(datagram: &[u8]) -> Datagram<'_> {
    let Some(header) = datagram.get(..HEADER_LEN) else {
        return Datagram::NotStun;
    };
    if header[0] & 0xc0 != 0 || header[4..8] != MAGIC_COOKIE {
        return Datagram::NotStun;
    }
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if length % 4 != 0 || datagram.len() != HEADER_LEN + length {
        return Datagram::Malformed;
    }
    let mut attributes = &datagram[HEADER_LEN..];
    while !attributes.is_empty() {
        let Some(&[t0, t1, l0, l1]) = attributes.get(..4) else {
            return Datagram::Malformed;
        };
        let kind = u16::from_be_bytes([t0, t1]);
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let Some(value) = attributes.get(4..4 + len) else {
            return Datagram::Malformed;
        };
        if kind == ATTR_USERNAME {
            let Ok(username) = std::str::from_utf8(value) else {
                return Datagram::Malformed;
            };
            let local_ufrag = username.split(':').next().unwrap_or_default();
            return Datagram::Check { local_ufrag };
        }
        // Values are padded to a multiple of four bytes.
        let padded = (4 + len).next_multiple_of(4);
        attributes = attributes.get(padded..).unwrap_or_default();
    }
    Datagram::NoUsername
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A binding request carrying `username` (and a dummy PRIORITY after it), as a test
    /// client would send it.
    pub(crate) fn binding_request(username: &str) -> Vec<u8> {
        let mut attributes = Vec::new();
        attributes.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attributes.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attributes.extend_from_slice(username.as_bytes());
        while attributes.len() % 4 != 0 {
            attributes.push(0);
        }
        attributes.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        let mut message = vec![0x00, 0x01];
        message.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
        message.extend_from_slice(&MAGIC_COOKIE);
        message.extend_from_slice(&[7; 12]);
        message.extend_from_slice(&attributes);
        message
    }

    #[test]
    fn a_check_names_its_local_ufrag() {
        assert_eq!(
            classify(&binding_request("srvU:cliU")),
            Datagram::Check {
                local_ufrag: "srvU"
            }
        );
        // Odd lengths are padded; a username without a colon is all local part.
        assert_eq!(
            classify(&binding_request("abcde")),
            Datagram::Check {
                local_ufrag: "abcde"
            }
        );
    }

    #[test]
    fn the_username_is_found_after_other_attributes() {
        let mut message = binding_request("x:y");
        // Move PRIORITY (the last 8 bytes) in front of USERNAME.
        let priority: Vec<u8> = message.drain(message.len() - 8..).collect();
        message.splice(20..20, priority);
        assert_eq!(classify(&message), Datagram::Check { local_ufrag: "x" });
    }

    #[test]
    fn the_webrtc_crates_own_binding_request_parses() {
        use webrtc::stun::agent::TransactionId;
        use webrtc::stun::message::{Message, Setter, BINDING_REQUEST};
        use webrtc::stun::textattrs::Username;
        let mut message = Message::new();
        let username = Username::new(webrtc::stun::attributes::ATTR_USERNAME, "aBcD:eFgH".into());
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(username),
        ];
        message.build(&setters).expect("builds");
        assert_eq!(
            classify(&message.raw),
            Datagram::Check {
                local_ufrag: "aBcD"
            }
        );
    }

    #[test]
    fn rtp_dtls_and_short_junk_are_not_stun() {
        assert_eq!(classify(&[0x80, 0x6f, 0, 1]), Datagram::NotStun);
        let mut rtp = binding_request("a:b");
        rtp[0] = 0x80;
        assert_eq!(classify(&rtp), Datagram::NotStun);
        let mut wrong_cookie = binding_request("a:b");
        wrong_cookie[5] ^= 1;
        assert_eq!(classify(&wrong_cookie), Datagram::NotStun);
        assert_eq!(classify(&[22, 254, 253, 0, 0]), Datagram::NotStun);
        assert_eq!(classify(&[]), Datagram::NotStun);
    }

    #[test]
    fn broken_lengths_and_usernames_are_malformed() {
        let good = binding_request("a:b");
        assert_eq!(classify(&good[..good.len() - 4]), Datagram::Malformed);
        let mut overrun = good.clone();
        overrun[23] = 200; // USERNAME longer than the message
        assert_eq!(classify(&overrun), Datagram::Malformed);
        let mut not_utf8 = binding_request("ab:c");
        not_utf8[24] = 0xff;
        assert_eq!(classify(&not_utf8), Datagram::Malformed);
        let mut odd_length = good;
        odd_length[3] = 3;
        assert_eq!(classify(&odd_length), Datagram::Malformed);
    }

    #[test]
    fn stun_without_a_username_is_told_apart() {
        let mut message = vec![0x00, 0x01, 0x00, 0x00];
        message.extend_from_slice(&MAGIC_COOKIE);
        message.extend_from_slice(&[1; 12]);
        assert_eq!(classify(&message), Datagram::NoUsername);
    }
}
