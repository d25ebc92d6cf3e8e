//! SDP, read and edited in one place, through the `sdp` crate webrtc-rs itself parses and
//! writes with: what the answer advertises (candidates, `a=max-message-size`, no
//! `a=ice-lite`, `--public-port`) and what is read from an offer or an answer (its first mid,
//! its ufrag, the video codecs it offers). Rooms will rewrite m-lines and msids here too.

use std::io::Cursor;

use webrtc::sdp::description::common::Attribute;
use webrtc::sdp::description::media::MediaDescription;
use webrtc::sdp::SessionDescription;

/// A session description that did not parse.
#[derive(Debug, thiserror::Error)]
#[error("unparsable SDP: {0}")]
pub struct SdpError(String);

/// A parsed session description.
#[derive(Debug, Clone)]
pub struct Sdp(SessionDescription);

const CANDIDATE: &str = "candidate";
const END_OF_CANDIDATES: &str = "end-of-candidates";
const MAX_MESSAGE_SIZE: &str = "max-message-size";
const SCTP_PORT: &str = "sctp-port";

impl Sdp {
    /// # Errors
    /// [`SdpError`] when `text` is not a session description.
    pub fn parse(text: &str) -> Result<Self, SdpError> {
        SessionDescription::unmarshal(&mut Cursor::new(text.as_bytes()))
            .map(Self)
            .map_err(|e| SdpError(e.to_string()))
    }

    /// The description as text (CRLF line ends).
    pub fn to_text(&self) -> String {
        self.0.marshal()
    }

    /// The first media section's `a=mid`: under BUNDLE every candidate belongs to it.
    pub fn first_mid(&self) -> Option<&str> {
        self.0
            .media_descriptions
            .first()?
            .attribute("mid")
            .flatten()
    }

    /// The local ICE ufrag (session level, or the first section that has one: under BUNDLE
    /// every section repeats it).
    pub fn ice_ufrag(&self) -> Option<&str> {
        self.transport_attribute("ice-ufrag")
    }

    /// The DTLS certificate fingerprint (session level, or the first section that has one).
    pub fn fingerprint(&self) -> Option<&str> {
        self.transport_attribute("fingerprint")
    }

    /// A transport attribute: at session level, or in the first section that has it (under
    /// BUNDLE every section repeats it).
    fn transport_attribute(&self, key: &str) -> Option<&str> {
        let session = self.0.attribute(key).map(String::as_str);
        session
            .into_iter()
            .chain(
                self.0
                    .media_descriptions
                    .iter()
                    .filter_map(|m| m.attribute(key).flatten()),
            )
            .find(|value| !value.is_empty())
    }

    /// Whether `other` comes from the same ICE and DTLS session (same ufrag and certificate
    /// fingerprint): a re-offer on a live connection rather than a new one.
    pub fn same_transport(&self, other: &Sdp) -> bool {
        self.ice_ufrag().is_some()
            && self.ice_ufrag() == other.ice_ufrag()
            && self.fingerprint().map(str::to_ascii_lowercase)
                == other.fingerprint().map(str::to_ascii_lowercase)
    }

    /// The codec names (upper case, e.g. `VP8`) of the video sections that are not rejected
    /// (port 0), in the order offered.
    pub fn active_video_codecs(&self) -> Vec<String> {
        self.0
            .media_descriptions
            .iter()
            .filter(|m| m.media_name.media == "video" && m.media_name.port.value != 0)
            .flat_map(|m| attribute_values(m, "rtpmap"))
            .filter_map(|rtpmap| {
                let codec = rtpmap.split_whitespace().nth(1)?;
                Some(codec.split('/').next()?.to_ascii_uppercase())
            })
            .collect()
    }

    /// Leaves `codec` (e.g. `VP8`) as the only video codec offered, with its RTX: a room
    /// forwards one video codec (its first publisher's), so a later publisher's answer must
    /// pick it. A video section that does not offer it is rejected (port 0).
    pub fn keep_video_codec(&mut self, codec: &str) {
        for media in &mut self.0.media_descriptions {
            if media.media_name.media != "video" || media.media_name.port.value == 0 {
                continue;
            }
            let mut kept: Vec<String> = attribute_values(media, "rtpmap")
                .filter_map(|rtpmap| {
                    let (pt, name) = rtpmap.split_once(' ')?;
                    let name = name.split('/').next()?;
                    name.eq_ignore_ascii_case(codec).then(|| pt.to_owned())
                })
                .collect();
            let rtx: Vec<String> = attribute_values(media, "fmtp")
                .filter_map(|fmtp| {
                    let (pt, params) = fmtp.split_once(' ')?;
                    let apt = params
                        .split(';')
                        .find_map(|p| p.trim().strip_prefix("apt="))?;
                    kept.iter().any(|k| k == apt).then(|| pt.to_owned())
                })
                .collect();
            if kept.is_empty() {
                media.media_name.port.value = 0;
                continue;
            }
            kept.extend(rtx);
            media.media_name.formats.retain(|pt| kept.contains(pt));
            media.attributes.retain(|a| {
                if !matches!(a.key.as_str(), "rtpmap" | "fmtp" | "rtcp-fb") {
                    return true;
                }
                let pt = a.value.as_deref().and_then(|v| v.split(' ').next());
                // `a=rtcp-fb:* nack` applies to every payload type.
                pt.is_some_and(|pt| pt == "*" || kept.iter().any(|k| k == pt))
            });
        }
    }

    /// `a=max-message-size:<limit>` in every data section, once, after its `a=sctp-port`
    /// (webrtc-rs writes none, which tells a client 64 KiB, RFC 8841 §6.1).
    pub fn advertise_max_message_size(&mut self, limit: usize) {
        for media in &mut self.0.media_descriptions {
            if media.media_name.media != "application" {
                continue;
            }
            media.attributes.retain(|a| a.key != MAX_MESSAGE_SIZE);
            let at = media
                .attributes
                .iter()
                .position(|a| a.key == SCTP_PORT)
                .map_or(media.attributes.len(), |i| i + 1);
            let size = Attribute::new(MAX_MESSAGE_SIZE.into(), Some(limit.to_string()));
            media.attributes.insert(at, size);
        }
    }

    /// Every `a=candidate` rewritten by `map` (given and returning the value after `a=`).
    pub fn map_candidates(&mut self, map: impl Fn(&str) -> String) {
        let sections = self.0.media_descriptions.iter_mut();
        for attribute in sections.flat_map(|m| m.attributes.iter_mut()) {
            if attribute.key == CANDIDATE {
                if let Some(value) = &attribute.value {
                    let line = map(&format!("{CANDIDATE}:{value}"));
                    attribute.value = line
                        .strip_prefix("candidate:")
                        .map(str::to_owned)
                        .or(Some(line));
                }
            }
        }
    }

    /// `candidates` (`candidate:...`, as trickled) added to the first media section (under
    /// BUNDLE every section shares its transport, as JSEP allows), then
    /// `a=end-of-candidates` when gathering is `complete`. Component 1 only (the server's
    /// answer always has rtcp-mux); a candidate the section already has is not repeated.
    pub fn add_candidates(&mut self, candidates: &[&str], complete: bool) {
        let Some(first) = self.0.media_descriptions.first_mut() else {
            return;
        };
        for candidate in candidates {
            let Some(value) = candidate.strip_prefix("candidate:") else {
                continue;
            };
            let known = attribute_values(first, CANDIDATE).any(|v| v == value);
            if value.split(' ').nth(1) == Some("1") && !known {
                let attribute = Attribute::new(CANDIDATE.into(), Some(value.to_owned()));
                first.attributes.push(attribute);
            }
        }
        if complete && !first.has_attribute(END_OF_CANDIDATES) {
            let end = Attribute::new(END_OF_CANDIDATES.into(), None);
            first.attributes.push(end);
        }
    }

    /// No `a=ice-lite`. The server's agent stays ICE-lite (it answers checks and sends only
    /// the triggered checks webrtc-rs's lite agent sends), but a client that knows its peer is
    /// lite nominates late: Chromium (semi-aggressive nomination) only on the ping after its
    /// pair became writable, about 50 ms later, aioice with a second check; webrtc-rs starts
    /// DTLS only at nomination. Told nothing, both nominate on their first check. The client
    /// stays controlling either way: it is the offerer.
    pub fn remove_ice_lite(&mut self) {
        self.0.attributes.retain(|a| a.key != "ice-lite");
    }

    /// The section `mid` announces the track `a=msid:<stream> <track>`, in its `a=msid` and
    /// its `a=ssrc` lines. A room's forwarded line carries whichever publisher's track it
    /// holds now: webrtc-rs freezes a sender's msid at its first offer (RFC 8829 §5.2.2 for
    /// a line that keeps its track), so a recycled line is given its new track's msid here.
    pub fn set_msid(&mut self, mid: &str, stream: &str, track: &str) {
        let Some(media) = self.section_mut(mid) else {
            return;
        };
        let msid = format!("{stream} {track}");
        let mut has_msid = false;
        for attribute in &mut media.attributes {
            if attribute.key == "msid" {
                attribute.value = Some(msid.clone());
                has_msid = true;
            } else if attribute.key == "ssrc" {
                let Some(value) = attribute.value.as_mut() else {
                    continue;
                };
                let Some((ssrc, rest)) = value.split_once(' ') else {
                    continue;
                };
                let ssrc = ssrc.to_owned();
                if rest.starts_with("msid:") {
                    *value = format!("{ssrc} msid:{msid}");
                } else if rest.starts_with("cname:") {
                    // webrtc-rs names the sources of a track after its stream.
                    *value = format!("{ssrc} cname:{stream}");
                } else if rest.starts_with("mslabel:") {
                    *value = format!("{ssrc} mslabel:{stream}");
                } else if rest.starts_with("label:") {
                    *value = format!("{ssrc} label:{track}");
                }
            }
        }
        if !has_msid {
            media
                .attributes
                .push(Attribute::new("msid".into(), Some(msid)));
        }
    }

    /// The section `mid` announces no track (an inactive forwarded line whose track left).
    pub fn clear_msid(&mut self, mid: &str) {
        if let Some(media) = self.section_mut(mid) {
            media
                .attributes
                .retain(|a| !matches!(a.key.as_str(), "msid" | "ssrc" | "ssrc-group"));
        }
    }

    /// How many media sections the description has.
    pub fn media_count(&self) -> usize {
        self.0.media_descriptions.len()
    }

    fn section_mut(&mut self, mid: &str) -> Option<&mut MediaDescription> {
        self.0
            .media_descriptions
            .iter_mut()
            .find(|m| m.attribute("mid").flatten() == Some(mid))
    }
}

/// The values of a section's attributes named `key`.
fn attribute_values<'a>(
    media: &'a MediaDescription,
    key: &'a str,
) -> impl Iterator<Item = &'a str> {
    media
        .attributes
        .iter()
        .filter(move |a| a.key == key)
        .filter_map(|a| a.value.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
    const HOST: &str = "candidate:1 1 udp 2130706431 10.0.0.1 50000 typ host";

    fn sdp(body: &str) -> Sdp {
        Sdp::parse(&format!("{HEAD}{body}")).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    fn audio_and_data() -> Sdp {
        sdp("a=ice-lite\r\na=group:BUNDLE 0 1\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
             a=ice-ufrag:AbCd\r\na=ice-pwd:x\r\na=rtpmap:111 opus/48000/2\r\n\
             m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
             a=mid:1\r\na=ice-ufrag:AbCd\r\na=sctp-port:5000\r\na=max-message-size:65536\r\n")
    }

    #[test]
    fn a_forwarded_line_gets_its_tracks_msid_and_an_empty_one_none() {
        let mut sdp = sdp("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:3\r\n\
             a=msid:bob mic\r\na=sendonly\r\na=ssrc:42 cname:bob\r\n\
             a=ssrc:42 msid:bob mic\r\na=ssrc:42 mslabel:bob\r\na=ssrc:42 label:mic\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:4\r\na=msid:carol mic\r\n\
             a=inactive\r\na=ssrc:43 msid:carol mic\r\n");
        sdp.set_msid("3", "erin", "audio-2");
        sdp.clear_msid("4");
        let text = sdp.to_text();
        assert!(text.contains("a=msid:erin audio-2\r\n"), "{text}");
        assert!(text.contains("a=ssrc:42 msid:erin audio-2\r\n"), "{text}");
        assert!(text.contains("a=ssrc:42 mslabel:erin\r\n"), "{text}");
        assert!(text.contains("a=ssrc:42 label:audio-2\r\n"), "{text}");
        assert!(text.contains("a=ssrc:42 cname:erin\r\n"), "{text}");
        assert!(!text.contains("bob") && !text.contains("carol"), "{text}");
        assert_eq!(sdp.media_count(), 2);
    }

    #[test]
    fn the_first_mid_and_the_ufrag_are_read() {
        let sdp = audio_and_data();
        assert_eq!(sdp.first_mid(), Some("0"));
        assert_eq!(sdp.ice_ufrag(), Some("AbCd"));
        let bare = Sdp::parse(HEAD).unwrap();
        assert_eq!(bare.first_mid(), None);
        assert_eq!(bare.ice_ufrag(), None);
        let empty = Sdp::parse(&format!("{HEAD}m=audio 9 RTP/AVP 0\r\na=ice-ufrag:\r\n")).unwrap();
        assert_eq!(empty.ice_ufrag(), None);
    }

    #[test]
    fn the_data_section_advertises_the_limit_once_after_its_sctp_port() {
        let mut sdp = audio_and_data();
        sdp.advertise_max_message_size(262_144);
        let text = sdp.to_text();
        assert_eq!(text.matches("a=max-message-size:").count(), 1, "{text}");
        assert!(
            text.contains("a=sctp-port:5000\r\na=max-message-size:262144\r\n"),
            "{text}"
        );
        let mut audio_only = self::sdp("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n");
        let before = audio_only.to_text();
        audio_only.advertise_max_message_size(10);
        assert_eq!(audio_only.to_text(), before);
    }

    #[test]
    fn a_re_offer_is_the_same_transport_only_with_ufrag_and_fingerprint_unchanged() {
        let offer = |ufrag: &str, fingerprint: &str| {
            Sdp::parse(&format!(
                "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
                 a=fingerprint:sha-256 {fingerprint}\r\n\
                 m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n\
                 a=ice-ufrag:{ufrag}\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\na=mid:0\r\n\
                 a=rtpmap:111 opus/48000/2\r\n"
            ))
            .expect("parses")
        };
        let live = offer("aaaa", "AB:CD");
        assert!(live.same_transport(&offer("aaaa", "ab:cd")));
        assert!(
            !live.same_transport(&offer("bbbb", "AB:CD")),
            "an ICE restart"
        );
        assert!(
            !live.same_transport(&offer("aaaa", "EF:01")),
            "a new client"
        );
    }

    #[test]
    fn candidates_go_to_the_first_section_once_with_end_of_candidates() {
        let mut sdp = audio_and_data();
        let rtcp = "candidate:1 2 udp 2130706430 10.0.0.1 50001 typ host";
        sdp.add_candidates(&[HOST, rtcp, HOST, "garbage"], true);
        let text = sdp.to_text();
        let (audio, data) = text.split_once("m=application").unwrap();
        assert_eq!(audio.matches(&format!("a={HOST}\r\n")).count(), 1, "{text}");
        assert!(audio.ends_with("a=end-of-candidates\r\n"), "{text}");
        assert!(!text.contains("50001"), "component 2 is left out: {text}");
        assert!(!data.contains("candidate"), "{text}");
        // Incomplete gathering: no end-of-candidates; applied twice, nothing repeats.
        let mut partial = audio_and_data();
        partial.add_candidates(&[HOST], false);
        partial.add_candidates(&[HOST], false);
        let text = partial.to_text();
        assert_eq!(text.matches("a=candidate:").count(), 1, "{text}");
        assert!(!text.contains("end-of-candidates"), "{text}");
    }

    #[test]
    fn candidates_are_rewritten_in_place() {
        let mut sdp = audio_and_data();
        sdp.add_candidates(&[HOST], true);
        sdp.map_candidates(|c| c.replace(" 50000 ", " 31001 "));
        let text = sdp.to_text();
        assert!(
            text.contains("a=candidate:1 1 udp 2130706431 10.0.0.1 31001 typ host\r\n"),
            "{text}"
        );
        assert!(text.contains("a=end-of-candidates\r\n"), "{text}");
    }

    #[test]
    fn ice_lite_is_left_out_and_the_rest_kept() {
        let mut sdp = audio_and_data();
        sdp.remove_ice_lite();
        let text = sdp.to_text();
        assert!(!text.contains("ice-lite"), "{text}");
        assert!(text.contains("a=group:BUNDLE 0 1\r\n"), "{text}");
    }

    #[test]
    fn a_room_keeps_one_video_codec_with_its_rtx_and_rejects_sections_without_it() {
        let mut offer = sdp(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103\r\na=rtpmap:96 VP8/90000\r\n\
             a=rtcp-fb:96 nack\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
             a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1\r\n\
             a=rtcp-fb:102 nack\r\na=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n",
        );
        offer.keep_video_codec("VP8");
        let text = offer.to_text();
        assert!(
            text.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n"),
            "{text}"
        );
        assert!(text.contains("a=fmtp:97 apt=96"), "{text}");
        assert!(text.contains("a=rtcp-fb:96 nack"), "{text}");
        assert!(!text.contains("H264/90000\r\na=fmtp:102"), "{text}");
        assert!(!text.contains("apt=102"), "{text}");
        assert!(
            text.contains("m=video 0 "),
            "the H264-only section is rejected: {text}"
        );
        assert_eq!(offer.active_video_codecs(), ["VP8", "RTX"]);
        assert!(text.contains("a=rtpmap:111 opus"), "audio untouched");
    }

    #[test]
    fn video_codecs_of_active_sections_only() {
        let both = sdp(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                        m=video 9 UDP/TLS/RTP/SAVPF 102 96\r\na=rtpmap:102 H264/90000\r\n\
                        a=rtpmap:96 vp8/90000\r\n",
        );
        assert_eq!(both.active_video_codecs(), ["H264", "VP8"]);
        let rejected = sdp("m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n");
        assert!(rejected.active_video_codecs().is_empty());
        let audio = sdp("m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n");
        assert!(audio.active_video_codecs().is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Sdp::parse("not sdp").is_err());
        assert!(Sdp::parse("").is_err());
    }
}
