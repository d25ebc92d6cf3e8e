//! Which layers of a simulcast track relayed from another worker (#16) the receiving worker
//! asks for: the ones its subscribers need, not all of them. Each subscriber's
//! [`LayerChoice`](super::LayerChoice) on the receiving worker decides, as for a local
//! track; the publishing worker then sends only those layers over the link.

use std::collections::BTreeSet;

use super::SimulcastLayers;

/// The layers of a relayed simulcast track to ask for, as indexes in the publisher's order
/// (what the relay's layer SSRCs and the worker API's `RelayLayers` carry): each
/// subscriber's target (the layer it is given, or awaits at that layer's next keyframe) and
/// the layer its copy still carries until then, so a switch does not leave it without
/// frames. `subscribers`: each one's target rid and the source SSRC its copy carries now.
/// Without subscribers, none: the link keeps the track and sends nothing of it.
pub fn wanted_layers<'a>(
    layers: &SimulcastLayers,
    subscribers: impl IntoIterator<Item = (Option<&'a str>, Option<u32>)>,
) -> BTreeSet<u8> {
    let mut wanted = BTreeSet::new();
    for (target, forwarded) in subscribers {
        let forwarded = forwarded.and_then(|ssrc| layers.rid_of(ssrc));
        for rid in [target, forwarded].into_iter().flatten() {
            if let Some(index) = layers
                .announced_index(rid)
                .and_then(|i| u8::try_from(i).ok())
            {
                wanted.insert(index);
            }
        }
    }
    wanted
}

/// Marks the layers not in `wanted` idle ([`SimulcastLayers::set_idle`]): they do not come
/// because they were not asked for, so they remain choices.
pub fn idle_unwanted(layers: &mut SimulcastLayers, wanted: &BTreeSet<u8>) {
    let unwanted: Vec<String> = layers
        .rids_announced()
        .enumerate()
        .filter(|(i, _)| u8::try_from(*i).map_or(true, |i| !wanted.contains(&i)))
        .map(|(_, rid)| rid.to_owned())
        .collect();
    for rid in unwanted {
        layers.set_idle(&rid);
    }
}

#[cfg(test)]
#[path = "relay_layers_tests.rs"]
mod tests;
