//! Rooms: the SFU proper (DESIGN.md §3b), as plain state with no sockets, tasks or clocks.
//!
//! Every type here takes inputs (with the time passed in as an `Instant` where time matters)
//! and returns decisions as values, so each rule of the rooms contract is unit tested without
//! a network. `peer/` adapts one connection to it: it feeds packets, reports and signaling
//! events in, and applies what comes out.
//!
//! - [`Room`]: participants, published tracks ([`Producer`]s, local or relayed from another
//!   worker of the room: their [`Origin`]), subscriptions and who gets what (last-N, pins,
//!   `off`), as [`RoomAction`]s.
//! - [`SpeakerDetector`]: the active speaker list from RFC 6464 audio levels.
//! - [`MuteDetector`]: publishers that stop or resume sending.
//! - [`Renegotiation`]: one participant's server offers, answers, glare and answer timers.
//! - [`MLinePlan`]: one subscriber's forwarded m-lines, recycled, and its track map.
//! - [`Consumer`] ([`RtpRewriter`], [`Vp8Rewriter`], [`ExtensionMap`]): one forwarded
//!   stream's packets.
//! - [`LayerSelector`]: one subscriber's simulcast layer.
//! - [`SimulcastLayers`], [`LayerChoice`]: a simulcast track's measured layers and each
//!   subscriber's layer among them; [`wanted_layers`]: the layers of a track relayed from
//!   another worker that the subscribers here need.
//! - [`ClientMessage`], [`ServerMessage`]: the room channel.

mod consumer;
mod error;
mod extensions;
mod layers;
mod limits;
mod messages;
mod mlines;
mod mute;
mod names;
mod relay_layers;
mod renegotiation;
mod rewrite;
mod room_state;
mod simulcast;
mod speakers;
mod track;
pub mod vp8;

pub use consumer::{Consumer, ConsumerConfig};
pub use error::RoomError;
pub use extensions::{extension_id, ExtensionMap, AUDIO_LEVEL_URI};
pub use layers::{LayerInfo, LayerSelector, UP_BACKOFF, UP_BACKOFF_MAX, UP_HOLD, UP_MARGIN};
pub use limits::RoomLimits;
pub use messages::{
    ClientMessage, HeightLimit, ServerMessage, SubscribeMode, SubscribeRequest, TrackEntry,
    MAX_CLIENT_MESSAGE_BYTES,
};
pub use mlines::{ForwardedTrack, LineState, MLine, MLinePlan, Placement};
pub use mute::{MuteDetector, MUTE_AFTER};
pub use names::{ParticipantId, RoomName, MAX_NAME_LEN};
pub use relay_layers::{idle_unwanted, wanted_layers};
pub use renegotiation::{Renegotiation, RenegotiationOutput, ANSWER_TIMEOUT};
pub use rewrite::{seq_before, RtpRewriter, Verdict};
pub use room_state::{Room, RoomAction, Subscription};
pub use simulcast::{
    LayerChoice, LayerRequest, SimulcastLayers, INITIAL_ESTIMATE_BPS, KEYFRAME_RETRY,
};
pub use speakers::{
    AudioLevel, SpeakerDetector, MAX_SPEAKERS, MIN_INTERVAL, SPEAKING_DBOV, SPEAKING_WINDOW,
};
pub use track::{Layer, MediaKind, Origin, Producer, ProducerId, PublishedTrack};
pub use vp8::{Vp8Descriptor, Vp8Rewriter};

#[cfg(test)]
mod flow_tests;
