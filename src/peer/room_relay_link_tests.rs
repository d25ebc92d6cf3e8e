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
        sender: Box::new(sender),
        back: None,
        tracks: vec![4, 9],
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
