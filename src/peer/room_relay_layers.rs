//! Simulcast tracks relayed from another worker of the room (#16), on the receiving
//! worker: each layer comes on a relay SSRC of its own ([`relay_layer_ssrc`]) into the
//! track's one fanout, measured as a local track's layers are, and only the layers the
//! subscribers here need are asked for ([`crate::room::wanted_layers`]).

use std::sync::Arc;

use super::room_forward::{Fanout, LayerMeter};
use super::room_pipeline::MixTap;
use super::room_relay_link::WantedTrack;
use crate::room::SimulcastLayers;
use crate::room_relay::{relay_layer_ssrc, RelayedTrack, MAX_RELAYED_LAYERS};

/// A relayed simulcast track's layers as known from the record: every announced one (up to
/// [`MAX_RELAYED_LAYERS`]) at its relay SSRC, so a subscriber may be given any of them
/// before it comes; and a meter for each (bitrate, keyframe heights).
pub(crate) fn remote_layers(
    track: &RelayedTrack,
) -> (SimulcastLayers, Vec<(String, Arc<LayerMeter>)>) {
    let rids = track.layers.iter().take(MAX_RELAYED_LAYERS);
    let mut layers = SimulcastLayers::new(rids.clone().cloned());
    let mut meters = Vec::new();
    for (index, rid) in rids.enumerate() {
        layers.set_ssrc(rid, relay_layer_ssrc(track.producer, index));
        meters.push((rid.clone(), Arc::new(LayerMeter::default())));
    }
    (layers, meters)
}

/// What a link delivers of `track`, by relay SSRC: its one stream, or each layer (with that
/// layer's meter from `meters`, by rid) into the same fanout. `mix`: the room pipeline's
/// input, for audio on the room's lead.
pub(crate) fn relayed_streams(
    track: &RelayedTrack,
    fanout: &Arc<Fanout>,
    audio_level: Option<u8>,
    mix: Option<Arc<MixTap>>,
    meters: &[(String, Arc<LayerMeter>)],
) -> Vec<(u32, WantedTrack)> {
    let wanted = |layer| WantedTrack {
        producer: track.producer,
        fanout: Arc::clone(fanout),
        kind: track.kind,
        audio_level,
        clock_rate: track.codec.clock_rate,
        mix: mix.clone(),
        layer,
    };
    if track.layers.is_empty() {
        return vec![(relay_layer_ssrc(track.producer, 0), wanted(None))];
    }
    let vp8 = track.codec.mime_type.eq_ignore_ascii_case("video/vp8");
    track
        .layers
        .iter()
        .take(MAX_RELAYED_LAYERS)
        .enumerate()
        .map(|(index, rid)| {
            let meter = meters
                .iter()
                .find(|(r, _)| r == rid)
                .map(|(_, meter)| (Arc::clone(meter), vp8));
            (relay_layer_ssrc(track.producer, index), wanted(meter))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::MediaKind;
    use crate::room_relay::RelayedCodec;

    fn camera(layers: &[&str]) -> RelayedTrack {
        RelayedTrack {
            publisher: "carol".into(),
            track_id: "cam".into(),
            kind: MediaKind::Video,
            layers: layers.iter().map(|l| (*l).to_owned()).collect(),
            producer: 3,
            codec: RelayedCodec {
                mime_type: "video/VP8".into(),
                clock_rate: 90_000,
                channels: 0,
                fmtp: String::new(),
            },
            extensions: vec![],
        }
    }

    #[test]
    fn each_layer_of_a_relayed_simulcast_track_arrives_on_its_own_ssrc_into_one_fanout() {
        let track = camera(&["q", "h", "f"]);
        let (layers, meters) = remote_layers(&track);
        assert_eq!(layers.rids_announced().collect::<Vec<_>>(), ["q", "h", "f"]);
        assert_eq!(layers.ssrc("h"), Some(relay_layer_ssrc(3, 1)));
        let fanout = Arc::new(Fanout::default());
        let streams = relayed_streams(&track, &fanout, None, None, &meters);
        let ssrcs: Vec<u32> = streams.iter().map(|(ssrc, _)| *ssrc).collect();
        assert_eq!(ssrcs, [(3 << 4) | 1, (3 << 4) | 2, (3 << 4) | 3]);
        for (_, stream) in &streams {
            assert!(Arc::ptr_eq(&stream.fanout, &fanout));
            assert!(stream.layer.as_ref().is_some_and(|(_, vp8)| *vp8));
        }
        let single = relayed_streams(&camera(&[]), &fanout, None, None, &[]);
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].0, crate::room_relay::relay_ssrc(3));
        assert!(single[0].1.layer.is_none());
    }
}
