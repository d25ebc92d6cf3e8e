//! The process-wide WebRTC stack: codecs, interceptors, and where ICE may gather.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use webrtc::api::interceptor_registry::{configure_rtcp_reports, configure_twcc_receiver_only};
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_OPUS};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::udp_mux::{UDPMuxDefault, UDPMuxParams};
use webrtc::ice::udp_network::UDPNetwork;
use webrtc::ice_transport::ice_candidate_type::RTCIceCandidateType;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::interceptor::nack::generator::Generator;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::sdp::extmap::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};

use super::advertise::PortMap;
use super::error::PeerError;
use super::nack::NackResponderBuilder;
use super::sdp::Sdp;
use super::udp_filter::{FilteredSocket, RateLimit, UdpFilter, UfragRegistration};
use super::video::{rtx_codecs, video_codecs};
use crate::config::{non_empty, MediaOptions};
use crate::room::AUDIO_LEVEL_URI;

/// Opus as RFC 7587 requires it in SDP (`opus/48000/2`), with in-band FEC allowed.
pub fn opus_capability() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

const OPUS_PAYLOAD_TYPE: u8 = 111;

/// Builds peer connections that share one codec set, one interceptor chain and, with
/// `--udp-port`, one UDP socket for every peer.
pub struct WebRtcStack {
    api: API,
    /// The shared ICE socket's address, when muxed.
    udp_address: Option<SocketAddr>,
    /// What the shared socket lets through to the mux; sessions register their ufrags.
    udp_filter: Option<Arc<UdpFilter>>,
    /// `--public-port`: the port host candidates advertise instead of the bound one.
    port_map: Option<PortMap>,
}

impl WebRtcStack {
    /// `public_ip` is the address host candidates advertise (`--public-ip`, resolved).
    ///
    /// # Errors
    /// `Setup` when the codec set cannot be registered, the UDP port cannot be bound, or
    /// `--public-port` is set without `--udp-port`.
    pub async fn new(options: &MediaOptions, public_ip: Option<IpAddr>) -> Result<Self, PeerError> {
        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    capability: opus_capability(),
                    payload_type: OPUS_PAYLOAD_TYPE,
                    ..Default::default()
                },
                RTPCodecType::Audio,
            )
            .map_err(|e| PeerError::Setup(format!("registering Opus: {e}")))?;
        // RFC 6464 audio levels: forwarded room audio keeps them (under the subscriber's id).
        media
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: AUDIO_LEVEL_URI.to_owned(),
                },
                RTPCodecType::Audio,
                None,
            )
            .map_err(|e| PeerError::Setup(format!("registering the audio level: {e}")))?;
        // Simulcast: a publisher's rid layers are told apart by these (webrtc-rs demuxes
        // them by mid and rid, one track per rid); forwarded packets never carry the
        // publisher's (see room/extensions.rs).
        for uri in [SDES_MID_URI, SDES_RTP_STREAM_ID_URI] {
            media
                .register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: uri.to_owned(),
                    },
                    RTPCodecType::Video,
                    None,
                )
                .map_err(|e| PeerError::Setup(format!("registering {uri}: {e}")))?;
        }
        for codec in video_codecs().into_iter().chain(rtx_codecs()) {
            media
                .register_codec(codec, RTPCodecType::Video)
                .map_err(|e| PeerError::Setup(format!("registering video codecs: {e}")))?;
        }
        let interceptors = interceptors(&mut media, options.nack_bytes_per_second)?;

        let mut settings = SettingEngine::default();
        // An RTX stream for each video sender whose receiver negotiated `video/rtx`; only
        // our NACK responder writes to it.
        settings.enable_sender_rtx(true);
        // Inbound data channels are read by our own task (peer/data_channel.rs): webrtc-rs's
        // reader closes a channel on any message above 64 KiB.
        settings.detach_data_channels();
        // ICE-lite, as SFUs usually are: the server only answers checks. A full agent here
        // would also send checks, and a client that receives one before it has the server's
        // candidate learns the address as peer-reflexive first; webrtc-rs 0.17 clients then
        // stall about a second before nominating.
        settings.set_lite(true);
        // No mDNS: the server never hides its addresses behind `.local` names, and with mDNS
        // queries on, every peer's agent also opens a multicast socket and resolves the
        // client's `.local` candidates (which a server cannot reach anyway).
        settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
        if options.ice_ips.is_empty() {
            // IPv6 link-local addresses need a scope id that candidates cannot carry: binding
            // them fails, and no remote peer could use them anyway.
            settings.set_ip_filter(Box::new(|ip| !is_ipv6_link_local(ip)));
        } else {
            let allowed = options.ice_ips.clone();
            settings.set_include_loopback_candidate(allowed.iter().any(IpAddr::is_loopback));
            settings.set_ip_filter(Box::new(move |ip| allowed.contains(&ip)));
        }
        if let Some(public_ip) = public_ip {
            settings.set_nat_1to1_ips(vec![public_ip.to_string()], RTCIceCandidateType::Host);
        }
        let mut udp_address = None;
        let mut udp_filter = None;
        if options.udp_port != 0 {
            let bind_ip = match options.ice_ips.as_slice() {
                [only] => *only,
                _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            };
            let socket = tokio::net::UdpSocket::bind((bind_ip, options.udp_port))
                .await
                .map_err(|e| {
                    PeerError::Setup(format!("binding UDP {bind_ip}:{}: {e}", options.udp_port))
                })?;
            udp_address = socket.local_addr().ok();
            let limit = RateLimit {
                rate: f64::from(options.udp_stun_rate),
                burst: f64::from(options.udp_stun_burst),
            };
            let filter = Arc::new(UdpFilter::new(limit, Instant::now()));
            settings.set_udp_network(UDPNetwork::Muxed(UDPMuxDefault::new(UDPMuxParams::new(
                FilteredSocket::new(socket, Arc::clone(&filter)),
            ))));
            udp_filter = Some(filter);
        }

        let port_map =
            match (options.public_port, udp_address) {
                (None, _) => None,
                (Some(public), Some(bound)) => Some(PortMap {
                    bound: bound.port(),
                    public,
                })
                .filter(|map| map.bound != map.public),
                (Some(_), None) => return Err(PeerError::Setup(
                    "--public-port needs --udp-port: an ephemeral port per peer cannot be mapped"
                        .into(),
                )),
            };

        let api = APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(interceptors)
            .with_setting_engine(settings)
            .build();
        // ICE-lite agents gather host candidates only, and webrtc-rs refuses STUN or TURN URLs
        // for them (ErrUselessUrlsProvided: every offer failed while any was configured). The
        // URLs are still checked here; STUN serves `--public-ip auto`, and clients reach a
        // server through their own TURN relays.
        let configured = ice_servers(options)?;
        if !configured.is_empty() {
            tracing::info!(
                servers = configured.len(),
                "server peers are ICE-lite: they advertise host candidates only and do not use \
                 the STUN/TURN servers (STUN serves --public-ip auto; clients use TURN themselves)"
            );
        }
        Ok(Self {
            api,
            udp_address,
            udp_filter,
            port_map,
        })
    }

    pub(crate) fn api(&self) -> &API {
        &self.api
    }

    /// Server peers have no ICE servers (ICE-lite, see [`WebRtcStack::new`]).
    pub(crate) fn rtc_configuration(&self) -> RTCConfiguration {
        RTCConfiguration::default()
    }

    /// The shared ICE UDP socket's address, when `--udp-port` is set.
    pub fn udp_address(&self) -> Option<SocketAddr> {
        self.udp_address
    }

    /// Lets the shared UDP port admit checks for the ufrag of `local_sdp` (our answer) until
    /// the registration is dropped; `None` without `--udp-port` (each peer has its own port).
    ///
    /// # Errors
    /// `Setup` when the SDP carries no `a=ice-ufrag`.
    pub(crate) fn admit_ufrag(
        &self,
        local_sdp: &str,
    ) -> Result<Option<UfragRegistration>, PeerError> {
        let Some(filter) = &self.udp_filter else {
            return Ok(None);
        };
        let sdp = Sdp::parse(local_sdp).map_err(|e| PeerError::Setup(e.to_string()))?;
        let ufrag = sdp
            .ice_ufrag()
            .ok_or_else(|| PeerError::Setup("the answer has no a=ice-ufrag".into()))?;
        Ok(Some(filter.register(ufrag)))
    }

    /// `--public-port`'s rewrite of local candidates, when it differs from the bound port.
    pub(crate) fn port_map(&self) -> Option<PortMap> {
        self.port_map
    }
}

/// webrtc-rs's default interceptors (NACK generator, RTCP reports, TWCC feedback) with our
/// NACK responder in place of its own. The generic NACK feedback it would register is in
/// our video codecs already. Each peer connection may resend `nack_bytes_per_second`.
fn interceptors(
    media: &mut MediaEngine,
    nack_bytes_per_second: u32,
) -> Result<Registry, PeerError> {
    let mut registry = Registry::new();
    // First: the innermost, so it counts what crosses SRTP (resends included).
    registry.add(Box::new(super::traffic::TrafficCounterBuilder));
    registry.add(Box::new(NackResponderBuilder {
        bytes_per_second: nack_bytes_per_second,
    }));
    registry.add(Box::new(Generator::builder()));
    registry = configure_rtcp_reports(registry);
    configure_twcc_receiver_only(registry, media)
        .map_err(|e| PeerError::Setup(format!("registering interceptors: {e}")))
}

fn is_ipv6_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// STUN URLs as given; TURN as `turn:host:port:user:credential`.
fn ice_servers(options: &MediaOptions) -> Result<Vec<RTCIceServer>, PeerError> {
    let mut servers: Vec<RTCIceServer> = non_empty(&options.stun_servers)
        .map(|url| RTCIceServer {
            urls: vec![url.to_owned()],
            ..Default::default()
        })
        .collect();
    for turn in non_empty(&options.turn_servers) {
        let parts: Vec<&str> = turn.splitn(5, ':').collect();
        let [scheme, host, port, user, credential] = parts.as_slice() else {
            return Err(PeerError::Setup(format!(
                "TURN server {turn:?} is not turn:host:port:user:credential"
            )));
        };
        servers.push(RTCIceServer {
            urls: vec![format!("{scheme}:{host}:{port}")],
            username: (*user).to_owned(),
            credential: (*credential).to_owned(),
        });
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fe80_slash_10_is_link_local() {
        assert!(is_ipv6_link_local("fe80::fc:ff:fe00:1".parse().unwrap()));
        assert!(is_ipv6_link_local("febf::1".parse().unwrap()));
        assert!(!is_ipv6_link_local("fec0::1".parse().unwrap()));
        assert!(!is_ipv6_link_local("2001:db8::1".parse().unwrap()));
        assert!(!is_ipv6_link_local("10.0.0.1".parse().unwrap()));
    }
}
