//! The publishing side of a link, over two real relay sockets: one copy per wanted track,
//! its SSRC the relay SSRC, payload untouched; a track no longer wanted stops.

use std::time::Duration;

use webrtc::rtp::header::Header;

use super::*;
use crate::room_relay::{RelayEndpoint, RelayKey};

fn packet(sequence_number: u16) -> Packet {
    Packet {
        header: Header {
            version: 2,
            payload_type: 111,
            sequence_number,
            timestamp: 960,
            ssrc: 1234,
            ..Default::default()
        },
        payload: Bytes::from_static(b"opus frame"),
    }
}

async fn received(packets: &mut mpsc::Receiver<RelayPacket>) -> Option<Packet> {
    let next = tokio::time::timeout(Duration::from_millis(500), packets.recv()).await;
    match next.ok()?? {
        RelayPacket::Rtp(bytes) => Packet::unmarshal(&mut bytes.as_ref()).ok(),
        RelayPacket::Rtcp(_) => None,
    }
}

#[tokio::test]
async fn a_link_carries_one_copy_of_each_wanted_local_track_until_it_is_not_wanted() {
    let local_address = "127.0.0.1:0".parse().unwrap();
    let receiving = RelayEndpoint::bind(local_address).await.unwrap();
    let sending = RelayEndpoint::bind(local_address).await.unwrap();
    let key = RelayKey::generate();
    let (link, mut packets) = receiving
        .accept(sending.local_addr().unwrap(), &key)
        .unwrap();
    let sender = sending
        .sender(link, receiving.local_addr().unwrap(), &key)
        .unwrap();
    let fanout = Arc::new(Fanout::default());
    let local = BTreeMap::from([(4, Arc::clone(&fanout))]);
    let tasks = TaskTracker::new();
    let counters = ForwardCounters::new("audio");
    let mut links = OutboundLinks::default();

    let (reply, relayed) = oneshot::channel();
    let open = RelayRequest::Open {
        worker: "worker-b".into(),
        link,
        sender,
        tracks: vec![4, 9],
        layers: TrackLayers::new(),
        reply,
    };
    links.handle(open, &local, &tasks);
    assert_eq!(relayed.await.unwrap(), vec![4], "9 is not published here");

    fanout.send(&packet(7), &counters).await;
    let copy = received(&mut packets).await.expect("the relayed copy");
    assert_eq!(copy.header.ssrc, crate::room_relay::relay_ssrc(4));
    assert_eq!(copy.header.sequence_number, 7);
    assert_eq!(copy.payload, packet(7).payload);
    assert!(received(&mut packets).await.is_none(), "one copy");

    let (reply, relayed) = oneshot::channel();
    let update = RelayRequest::Update {
        worker: "worker-b".into(),
        link,
        tracks: vec![],
        layers: TrackLayers::new(),
        reply,
    };
    links.handle(update, &local, &tasks);
    assert_eq!(relayed.await.unwrap(), Some(vec![]));
    fanout.send(&packet(8), &counters).await;
    assert!(
        received(&mut packets).await.is_none(),
        "not wanted any more"
    );

    let close = |reply| RelayRequest::Close {
        worker: "worker-b".into(),
        link,
        reply,
    };
    let (reply, closed) = oneshot::channel();
    links.handle(close(reply), &local, &tasks);
    assert!(closed.await.unwrap());
    let (reply, closed) = oneshot::channel();
    links.handle(close(reply), &local, &tasks);
    assert!(!closed.await.unwrap(), "closing twice");
    let (reply, relayed) = oneshot::channel();
    let update = RelayRequest::Update {
        worker: "worker-b".into(),
        link,
        tracks: vec![4],
        layers: TrackLayers::new(),
        reply,
    };
    links.handle(update, &local, &tasks);
    assert_eq!(relayed.await.unwrap(), None, "no such link");
}

#[test]
fn a_failing_link_is_retried_ever_more_slowly_up_to_half_a_minute() {
    let waits: Vec<u64> = (1..=8).map(|n| reopen_delay(n).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(reopen_delay(u32::MAX), REOPEN_MAX);
}

/// A local simulcast track's packet of layer source `ssrc`.
fn layer_packet(ssrc: u32, sequence_number: u16) -> Packet {
    let mut packet = packet(sequence_number);
    packet.header.ssrc = ssrc;
    packet.header.payload_type = 96;
    packet
}

#[tokio::test]
async fn a_link_carries_only_the_wanted_layers_of_a_simulcast_track_each_on_its_own_ssrc() {
    use crate::room_relay::relay_layer_ssrc;

    let local_address = "127.0.0.1:0".parse().unwrap();
    let receiving = RelayEndpoint::bind(local_address).await.unwrap();
    let sending = RelayEndpoint::bind(local_address).await.unwrap();
    let key = RelayKey::generate();
    let (link, mut packets) = receiving
        .accept(sending.local_addr().unwrap(), &key)
        .unwrap();
    let sender = sending
        .sender(link, receiving.local_addr().unwrap(), &key)
        .unwrap();
    // Layers q, h, f arrive on source SSRCs 100, 200, 300.
    let fanout = Arc::new(Fanout::default());
    for (index, ssrc) in [100, 200, 300].into_iter().enumerate() {
        fanout.set_layer(ssrc, index);
    }
    let local = BTreeMap::from([(4, Arc::clone(&fanout))]);
    let tasks = TaskTracker::new();
    let counters = ForwardCounters::new("video");
    let mut links = OutboundLinks::default();
    let send_all = |sequence_number: u16| {
        let fanout = Arc::clone(&fanout);
        let counters = &counters;
        async move {
            for ssrc in [100, 200, 300] {
                fanout
                    .send(&layer_packet(ssrc, sequence_number), counters)
                    .await;
            }
        }
    };

    let (reply, relayed) = oneshot::channel();
    let open = RelayRequest::Open {
        worker: "worker-b".into(),
        link,
        sender,
        tracks: vec![4],
        layers: TrackLayers::from([(4, BTreeSet::from([1]))]),
        reply,
    };
    links.handle(open, &local, &tasks);
    assert_eq!(relayed.await.unwrap(), vec![4]);
    send_all(1).await;
    let copy = received(&mut packets).await.expect("layer h");
    assert_eq!(copy.header.ssrc, relay_layer_ssrc(4, 1));
    assert_eq!(copy.header.sequence_number, 1);
    assert!(received(&mut packets).await.is_none(), "q and f are not wanted");

    // The subscribers there moved up: f (and h until f's keyframe).
    let (reply, relayed) = oneshot::channel();
    let update = RelayRequest::Update {
        worker: "worker-b".into(),
        link,
        tracks: vec![4],
        layers: TrackLayers::from([(4, BTreeSet::from([1, 2]))]),
        reply,
    };
    links.handle(update, &local, &tasks);
    assert_eq!(relayed.await.unwrap(), Some(vec![4]));
    send_all(2).await;
    let mut ssrcs = Vec::new();
    while let Some(copy) = received(&mut packets).await {
        ssrcs.push(copy.header.ssrc);
    }
    assert_eq!(ssrcs, [relay_layer_ssrc(4, 1), relay_layer_ssrc(4, 2)]);

    // A worker that names no layers (one that predates them) gets them all.
    let (reply, relayed) = oneshot::channel();
    let update = RelayRequest::Update {
        worker: "worker-b".into(),
        link,
        tracks: vec![4],
        layers: TrackLayers::new(),
        reply,
    };
    links.handle(update, &local, &tasks);
    assert_eq!(relayed.await.unwrap(), Some(vec![4]));
    send_all(3).await;
    let mut ssrcs = Vec::new();
    while let Some(copy) = received(&mut packets).await {
        ssrcs.push(copy.header.ssrc);
    }
    assert_eq!(ssrcs, [1, 2, 3].map(|layer| relay_layer_ssrc(4, layer - 1)));

    // A packet of a layer not known yet is not relayed (its relay SSRC is unknown).
    fanout.send(&layer_packet(999, 4), &counters).await;
    assert!(received(&mut packets).await.is_none());
}
