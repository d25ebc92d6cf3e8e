//! The publishing side of a link, over two real relay sockets: one copy per wanted track,
//! its SSRC the relay SSRC, payload untouched; a track no longer wanted stops.

use std::time::Duration;

use webrtc::rtp::header::Header;

use super::*;
use crate::room_relay::{relay_ssrc, RelayEndpoint, RelayKey};

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
        sender: Box::new(sender),
        back: None,
        tracks: vec![4, 9],
        layers: TrackLayers::new(),
        reply,
    };
    links.handle(open, &local, &tasks);
    assert_eq!(relayed.await.unwrap(), vec![4], "9 is not published here");

    fanout.send(&packet(7), &counters).await;
    let copy = received(&mut packets).await.expect("the relayed copy");
    assert_eq!(copy.header.ssrc, relay_ssrc(4));
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

/// Two relay sockets and a link from `a` to `b` with its back channel, as `OpenRelay` makes
/// them: B's receiving end, A's back channel and B's sender on it.
async fn link_with_back_channel(
    a: &Arc<RelayEndpoint>,
    b: &Arc<RelayEndpoint>,
) -> (
    u32,
    mpsc::Receiver<RelayPacket>,
    RelaySender,
    BackChannel,
    RelaySender,
) {
    let key = RelayKey::generate();
    let (link, packets) = b.accept(a.local_addr().unwrap(), &key).unwrap();
    let sender = a.sender(link, b.local_addr().unwrap(), &key).unwrap();
    let back_key = RelayKey::generate();
    let (back_link, back_packets) = a.accept_back(b.local_addr().unwrap(), &back_key).unwrap();
    let back = BackChannel {
        packets: back_packets,
        guard: a.close_on_drop(back_link),
    };
    let back_sender = b
        .sender(back_link, a.local_addr().unwrap(), &back_key)
        .unwrap();
    (link, packets, sender, back, back_sender)
}

fn rtcp_of(packet: RelayPacket) -> Vec<Box<dyn webrtc::rtcp::packet::Packet + Send + Sync>> {
    match packet {
        RelayPacket::Rtcp(bytes) => webrtc::rtcp::packet::unmarshal(&mut bytes.as_ref()).unwrap(),
        RelayPacket::Rtp(_) => panic!("RTP where RTCP was due"),
    }
}

#[tokio::test]
async fn an_idle_link_reports_and_its_back_channel_brings_feedback_to_the_room_until_closed() {
    use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use webrtc::util::marshal::Marshal;

    let local_address = "127.0.0.1:0".parse().unwrap();
    let a = Arc::new(RelayEndpoint::bind(local_address).await.unwrap());
    let b = Arc::new(RelayEndpoint::bind(local_address).await.unwrap());
    let (link, mut packets, sender, back, mut back_sender) = link_with_back_channel(&a, &b).await;
    let tasks = TaskTracker::new();
    let mut links = OutboundLinks::default();
    let (reply, relayed) = oneshot::channel();
    let open = RelayRequest::Open {
        worker: "worker-b".into(),
        link,
        sender: Box::new(sender),
        back: Some(back),
        tracks: vec![],
        layers: TrackLayers::new(),
        reply,
    };
    links.handle(open, &BTreeMap::new(), &tasks);
    assert_eq!(relayed.await.unwrap(), Vec::<u64>::new());

    // No track, yet the link reports: an empty receiver report from the link's SSRC.
    let first = tokio::time::timeout(Duration::from_secs(2), packets.recv())
        .await
        .unwrap()
        .unwrap();
    let report = rtcp_of(first);
    let rr = report[0].as_any().downcast_ref::<ReceiverReport>().unwrap();
    assert_eq!(rr.ssrc, liveness::LINK_SSRC);

    // B's subscribers' feedback reaches A's room, tagged with the link.
    let pli = PictureLossIndication {
        sender_ssrc: liveness::LINK_SSRC,
        media_ssrc: relay_ssrc(4),
    };
    back_sender
        .send_rtcp(&pli.marshal().unwrap())
        .await
        .unwrap();
    let feedback = tokio::time::timeout(Duration::from_secs(2), links.feedback())
        .await
        .expect("the feedback");
    assert_eq!(
        (feedback.worker.as_str(), feedback.link),
        ("worker-b", link)
    );
    let parsed = webrtc::rtcp::packet::unmarshal(&mut feedback.rtcp.as_ref()).unwrap();
    let got = parsed[0]
        .as_any()
        .downcast_ref::<PictureLossIndication>()
        .unwrap();
    assert_eq!(got.media_ssrc, relay_ssrc(4));

    // Closed by B: A's link says goodbye, and its back channel is gone with it.
    let (reply, closed) = oneshot::channel();
    links.handle(
        RelayRequest::Close {
            worker: "worker-b".into(),
            link,
            reply,
        },
        &BTreeMap::new(),
        &tasks,
    );
    assert!(closed.await.unwrap());
    let bye = loop {
        let packet = tokio::time::timeout(Duration::from_secs(2), packets.recv())
            .await
            .unwrap()
            .unwrap();
        let rtcp = rtcp_of(packet);
        if let Some(bye) = rtcp[0].as_any().downcast_ref::<Goodbye>() {
            break bye.clone();
        }
    };
    assert_eq!(bye.sources, [liveness::LINK_SSRC]);
    assert_eq!(links.len(), 0);
    back_sender
        .send_rtcp(&pli.marshal().unwrap())
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), links.feedback())
            .await
            .is_err(),
        "nothing comes back on a closed link"
    );
}

#[tokio::test(start_paused = true)]
async fn a_link_that_hears_nothing_back_for_five_seconds_is_closed_and_untapped() {
    let local_address = "127.0.0.1:0".parse().unwrap();
    let a = Arc::new(RelayEndpoint::bind(local_address).await.unwrap());
    let b = Arc::new(RelayEndpoint::bind(local_address).await.unwrap());
    let (link, mut packets, sender, back, _back_sender) = link_with_back_channel(&a, &b).await;
    let fanout = Arc::new(Fanout::default());
    let local = BTreeMap::from([(4, Arc::clone(&fanout))]);
    let tasks = TaskTracker::new();
    let counters = ForwardCounters::new("audio");
    let mut links = OutboundLinks::default();
    let (reply, relayed) = oneshot::channel();
    let open = RelayRequest::Open {
        worker: "worker-b".into(),
        link,
        sender: Box::new(sender),
        back: Some(back),
        tracks: vec![4],
        layers: TrackLayers::new(),
        reply,
    };
    links.handle(open, &local, &tasks);
    assert_eq!(relayed.await.unwrap(), vec![4]);

    // B never answers: within a few seconds more than the limit, the room closes the link.
    let _ = tokio::time::timeout(SEND_SILENCE * 2, links.feedback()).await;
    assert_eq!(links.len(), 0, "closed");
    while packets.try_recv().is_ok() {}
    fanout.send(&packet(9), &counters).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut relayed = Vec::new();
    while let Ok(packet) = packets.try_recv() {
        if let RelayPacket::Rtp(bytes) = packet {
            relayed.push(bytes);
        }
    }
    assert!(relayed.is_empty(), "the track's tap went with the link");
}

/// The next RTP packet on the link (its reports skipped), if one comes within 500 ms.
async fn received_rtp(packets: &mut mpsc::Receiver<RelayPacket>) -> Option<Packet> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        let next = tokio::time::timeout_at(deadline, packets.recv()).await;
        if let RelayPacket::Rtp(bytes) = next.ok()?? {
            return Packet::unmarshal(&mut bytes.as_ref()).ok();
        }
    }
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
        sender: Box::new(sender),
        back: None,
        tracks: vec![4],
        layers: TrackLayers::from([(4, BTreeSet::from([1]))]),
        reply,
    };
    links.handle(open, &local, &tasks);
    assert_eq!(relayed.await.unwrap(), vec![4]);
    send_all(1).await;
    let copy = received_rtp(&mut packets).await.expect("layer h");
    assert_eq!(copy.header.ssrc, relay_layer_ssrc(4, 1));
    assert_eq!(copy.header.sequence_number, 1);
    assert!(
        received_rtp(&mut packets).await.is_none(),
        "q and f are not wanted"
    );

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
    while let Some(copy) = received_rtp(&mut packets).await {
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
    while let Some(copy) = received_rtp(&mut packets).await {
        ssrcs.push(copy.header.ssrc);
    }
    assert_eq!(ssrcs, [1, 2, 3].map(|layer| relay_layer_ssrc(4, layer - 1)));

    // A packet of a layer not known yet is not relayed (its relay SSRC is unknown).
    fanout.send(&layer_packet(999, 4), &counters).await;
    assert!(received_rtp(&mut packets).await.is_none());
}

/// #16's "NACKs ... answered by A otherwise": a packet lost between the workers (a proxy
/// on the link drops it) never reached B, so B's subscribers' NACKs could not be answered
/// there; B's gap detector NACKs it over the back channel and A resends it from what it
/// relayed on the link.
#[tokio::test]
async fn a_packet_lost_on_the_link_is_nacked_by_b_and_resent_by_a() {
    use webrtc::util::Marshal;

    use super::super::room_relay_repair::GapDetector;

    let local_address = "127.0.0.1:0".parse().unwrap();
    let a = Arc::new(RelayEndpoint::bind(local_address).await.unwrap());
    let b = Arc::new(RelayEndpoint::bind(local_address).await.unwrap());
    // A's packets go through a proxy that drops the one with RTP sequence number 3, once.
    let proxy = tokio::net::UdpSocket::bind(local_address).await.unwrap();
    let proxy_address = proxy.local_addr().unwrap();
    let b_address = b.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = vec![0; 2048];
        let mut dropped = false;
        while let Ok((len, _)) = proxy.recv_from(&mut buffer).await {
            // A link id (4 bytes), then the RTP header in the clear: its sequence number.
            let datagram = &buffer[..len];
            let rtp = datagram.len() > 8 && !(192..=223).contains(&datagram[5]);
            if rtp && !dropped && datagram[6..8] == [0, 3] {
                dropped = true;
                continue;
            }
            let _ = proxy.send_to(datagram, b_address).await;
        }
    });
    let key = RelayKey::generate();
    let (link, mut packets) = b.accept(proxy_address, &key).unwrap();
    let sender = a.sender(link, proxy_address, &key).unwrap();
    let back_key = RelayKey::generate();
    let (back_link, back_packets) = a.accept_back(b_address, &back_key).unwrap();
    let back = BackChannel {
        packets: back_packets,
        guard: a.close_on_drop(back_link),
    };
    let mut back_sender = b
        .sender(back_link, a.local_addr().unwrap(), &back_key)
        .unwrap();
    let fanout = Arc::new(Fanout::default());
    let local = BTreeMap::from([(4, Arc::clone(&fanout))]);
    let tasks = TaskTracker::new();
    let counters = ForwardCounters::new("video");
    let mut links = OutboundLinks::default();
    let (reply, relayed) = oneshot::channel();
    let open = RelayRequest::Open {
        worker: "worker-b".into(),
        link,
        sender: Box::new(sender),
        back: Some(back),
        tracks: vec![4],
        layers: TrackLayers::new(),
        reply,
    };
    links.handle(open, &local, &tasks);
    assert_eq!(relayed.await.unwrap(), vec![4]);
    let resent_before = crate::room_relay::metrics::metrics().resent.get();

    for sequence_number in 1..=5 {
        fanout.send(&packet(sequence_number), &counters).await;
    }
    let mut gaps = GapDetector::default();
    let mut arrived = Vec::new();
    while let Some(copy) = received_rtp(&mut packets).await {
        let bytes = copy.marshal().unwrap();
        if let Some(nack) = gaps.on_rtp(&bytes) {
            back_sender.send_rtcp(&nack).await.unwrap();
        }
        arrived.push(copy.header.sequence_number);
    }
    let position = |seq| arrived.iter().position(|s| *s == seq);
    assert!(
        position(3) > position(4),
        "3 came after 4, once B NACKed it: {arrived:?}"
    );
    arrived.sort_unstable();
    assert_eq!(arrived, [1, 2, 3, 4, 5], "each once");
    assert_eq!(
        crate::room_relay::metrics::metrics().resent.get(),
        resent_before + 1
    );
}
