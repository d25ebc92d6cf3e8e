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
