//! A simulcast track's layers as the room measures them, and each subscriber's choice among
//! them (mediasoup's preferred layers of a *Consumer*, LiveKit's *Forwarder* target).
//!
//! A publisher that sends rid layers publishes one track; its layers arrive one by one (each
//! with its first packet) and are measured here: incoming bitrate over one-second windows and
//! frame height from each layer's latest VP8 keyframe header. Each subscriber of the track has
//! a [`LayerChoice`]: a [`LayerSelector`] fed with its receiver reports and REMB, and the layer
//! it asked for. [`SimulcastLayers::choose`] turns that into at most one request for the
//! adapter: switch the subscriber's forwarded copy to another layer's SSRC (it takes effect at
//! that layer's next keyframe, which the adapter asks for), or ask again for the keyframe a
//! pending switch still waits for.

use std::time::{Duration, Instant};

use super::layers::{LayerInfo, LayerSelector};

/// A new subscriber's path estimate before its first report, bits per second.
pub const INITIAL_ESTIMATE_BPS: u64 = 1_000_000;
/// A switch still waiting for the target layer's keyframe asks for one again this often (the
/// first request or the keyframe may have been lost).
pub const KEYFRAME_RETRY: Duration = Duration::from_secs(1);
/// Incoming bitrates are measured over windows this long.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// A layer that brought nothing this long while another still flows is not chosen (the
/// publisher stopped sending it: a browser drops its top layer when its uplink or CPU is short).
pub const LAYER_SILENCE: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct LayerState {
    rid: String,
    /// The layer's source SSRC, once its first packet arrived.
    ssrc: Option<u32>,
    /// From its latest keyframe header.
    height: Option<u32>,
    /// Measured over the last complete window.
    bitrate_bps: Option<u64>,
    window_bytes: u64,
    window_start: Option<Instant>,
    /// The last sample that brought bytes (`None`: none sampled yet since it arrived).
    last_bytes_at: Option<Instant>,
}

impl LayerState {
    /// Whether it brought nothing for [`LAYER_SILENCE`] up to `now`.
    fn silent(&self, now: Instant) -> bool {
        self.last_bytes_at
            .is_some_and(|at| now.saturating_duration_since(at) >= LAYER_SILENCE)
    }
}

/// The layers of one published simulcast track.
#[derive(Debug)]
pub struct SimulcastLayers {
    /// In the order the publisher announced them (`a=simulcast`).
    layers: Vec<LayerState>,
}

/// What the adapter does for one subscriber after [`SimulcastLayers::choose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerRequest {
    /// Forward the layer `rid` (source `ssrc`) from its next keyframe and ask the publisher
    /// for one. `initial`: the subscriber's first layer, not a switch.
    Switch {
        rid: String,
        ssrc: u32,
        initial: bool,
    },
    /// The switch to `ssrc` still waits for a keyframe: ask the publisher again.
    Keyframe { ssrc: u32 },
}

/// One subscriber's layer of one simulcast track.
#[derive(Debug)]
pub struct LayerChoice {
    selector: LayerSelector,
    /// The layer asked for last (forwarded, or awaited at its next keyframe).
    target: Option<String>,
    /// When its keyframe was last asked for.
    asked_at: Option<Instant>,
}

impl Default for LayerChoice {
    fn default() -> Self {
        Self::new(INITIAL_ESTIMATE_BPS)
    }
}

impl LayerChoice {
    pub fn new(initial_bps: u64) -> Self {
        Self {
            selector: LayerSelector::new(initial_bps),
            target: None,
            asked_at: None,
        }
    }

    /// A receiver report block of the subscriber's forwarded copy (fraction lost in 1/256).
    pub fn on_receiver_report(&mut self, fraction_lost: u8) {
        self.selector.on_receiver_report(fraction_lost);
    }

    /// The subscriber's REMB.
    pub fn on_remb(&mut self, bitrate_bps: u64, now: Instant) {
        self.selector.on_remb(bitrate_bps, now);
    }

    /// The layer asked for last.
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// What the subscriber's path carries now, bits per second.
    pub fn available_bps(&self, now: Instant) -> u64 {
        self.selector.available_bps(now)
    }
}

impl SimulcastLayers {
    /// The layers the publisher announced, by rid (none has arrived yet).
    pub fn new<S: Into<String>>(rids: impl IntoIterator<Item = S>) -> Self {
        let mut layers = Self { layers: Vec::new() };
        for rid in rids {
            layers.entry(&rid.into());
        }
        layers
    }

    fn entry(&mut self, rid: &str) -> &mut LayerState {
        let index = match self.layers.iter().position(|l| l.rid == rid) {
            Some(index) => index,
            None => {
                self.layers.push(LayerState {
                    rid: rid.to_owned(),
                    ssrc: None,
                    height: None,
                    bitrate_bps: None,
                    window_bytes: 0,
                    window_start: None,
                    last_bytes_at: None,
                });
                self.layers.len() - 1
            }
        };
        &mut self.layers[index]
    }

    /// The layer `rid` arrived with source `ssrc` (a layer not announced is added).
    pub fn set_ssrc(&mut self, rid: &str, ssrc: u32) {
        self.entry(rid).ssrc = Some(ssrc);
    }

    /// The source SSRC of layer `rid`, once it arrived.
    pub fn ssrc(&self, rid: &str) -> Option<u32> {
        self.layers
            .iter()
            .find(|l| l.rid == rid)
            .and_then(|l| l.ssrc)
    }

    /// Layer `rid`'s index in the publisher's order ([`SimulcastLayers::rids_announced`]).
    pub fn announced_index(&self, rid: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.rid == rid)
    }

    /// Layer `rid` does not come now because nobody here asked for it (a layer of a track
    /// relayed from another worker, #16): not coming is not silence, so it stays a choice
    /// (asking for it brings it). Its rate window starts again when it comes back; its last
    /// measured bitrate and height are kept.
    pub fn set_idle(&mut self, rid: &str) {
        if let Some(layer) = self.layers.iter_mut().find(|l| l.rid == rid) {
            layer.last_bytes_at = None;
            layer.window_bytes = 0;
            layer.window_start = None;
        }
    }

    /// The rid of the layer whose source is `ssrc`.
    pub fn rid_of(&self, ssrc: u32) -> Option<&str> {
        self.layers
            .iter()
            .find(|l| l.ssrc == Some(ssrc))
            .map(|l| l.rid.as_str())
    }

    /// What layer `rid` brought since the last sample: `bytes` of RTP, and the height of its
    /// latest keyframe if one came. Returns the new height when it changed.
    pub fn on_sample(
        &mut self,
        rid: &str,
        bytes: u64,
        height: Option<u32>,
        now: Instant,
    ) -> Option<u32> {
        let layer = self.entry(rid);
        let start = *layer.window_start.get_or_insert(now);
        layer.window_bytes += bytes;
        if bytes > 0 {
            layer.last_bytes_at = Some(now);
        }
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let bps = layer.window_bytes as f64 * 8.0 / elapsed.as_secs_f64();
            // Half the new window, half the old: one odd window (a keyframe) moves it less.
            let bps = match layer.bitrate_bps {
                Some(old) => (old as f64 + bps) / 2.0,
                None => bps,
            };
            layer.bitrate_bps = Some(bps as u64);
            layer.window_bytes = 0;
            layer.window_start = Some(now);
        }
        let changed = height.filter(|h| layer.height != Some(*h));
        if changed.is_some() {
            layer.height = changed;
        }
        changed
    }

    /// The layers that arrived, lowest first: by keyframe height once every one's is known,
    /// else by measured bitrate once every one's is, else in the publisher's order (browsers
    /// and LiveKit's clients announce `q;h;f`, lowest first).
    fn ordered(&self) -> Vec<&LayerState> {
        let mut arrived: Vec<&LayerState> =
            self.layers.iter().filter(|l| l.ssrc.is_some()).collect();
        if arrived.iter().all(|l| l.height.is_some()) {
            arrived.sort_by_key(|l| (l.height, l.bitrate_bps));
        } else if arrived.iter().all(|l| l.bitrate_bps.is_some()) {
            arrived.sort_by_key(|l| l.bitrate_bps);
        }
        arrived
    }

    /// Every layer's rid, in the publisher's order.
    pub fn rids_announced(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().map(|l| l.rid.as_str())
    }

    /// The rids of the layers that arrived, lowest first.
    pub fn rids_lowest_first(&self) -> Vec<&str> {
        self.ordered().iter().map(|l| l.rid.as_str()).collect()
    }

    /// The subscriber's layer now: the highest that fits `max_height` and its path (see
    /// [`LayerSelector`]) among the layers still flowing (a layer silent for
    /// [`LAYER_SILENCE`] is left while another flows; when all are silent, nothing changes);
    /// `forwarded` is the source SSRC its copy carries now. Returns what to do, if anything.
    pub fn choose(
        &self,
        choice: &mut LayerChoice,
        max_height: Option<u32>,
        forwarded: Option<u32>,
        now: Instant,
    ) -> Option<LayerRequest> {
        let mut ordered = self.ordered();
        if ordered.iter().any(|l| !l.silent(now)) {
            ordered.retain(|l| !l.silent(now));
        }
        let infos: Vec<LayerInfo> = ordered
            .iter()
            .map(|l| LayerInfo {
                height: l.height,
                bitrate_bps: l.bitrate_bps,
            })
            .collect();
        // The order may have changed since the last choice (a height learned): the selector
        // continues from the layer asked for, wherever it is now.
        let current = choice
            .target
            .as_deref()
            .and_then(|rid| ordered.iter().position(|l| l.rid == rid));
        choice.selector.set_current(current);
        let chosen = ordered.get(choice.selector.choose(&infos, max_height, now)?)?;
        let ssrc = chosen.ssrc?;
        if choice.target.as_deref() != Some(chosen.rid.as_str()) {
            let initial = choice.target.is_none();
            choice.target = Some(chosen.rid.clone());
            choice.asked_at = Some(now);
            return Some(LayerRequest::Switch {
                rid: chosen.rid.clone(),
                ssrc,
                initial,
            });
        }
        let waiting = forwarded != Some(ssrc);
        let retry = choice
            .asked_at
            .is_none_or(|at| now.saturating_duration_since(at) >= KEYFRAME_RETRY);
        if waiting && retry {
            choice.asked_at = Some(now);
            return Some(LayerRequest::Keyframe { ssrc });
        }
        None
    }
}

#[cfg(test)]
#[path = "simulcast_tests.rs"]
mod tests;
