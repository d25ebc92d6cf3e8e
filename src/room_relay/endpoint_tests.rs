//! The relay on real UDP sockets on 127.0.0.1: what one worker sends on a link arrives at
//! the other decrypted; what an outsider sends is dropped and counted.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::util::marshal::Marshal;

use super::metrics::metrics;
use super::{RelayEndpoint, RelayKey, RelayPacket};

const WAIT: Duration = Duration::from_secs(2);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn rtp(sequence_number: u16, payload: &'static [u8]) -> Vec<u8> {
    Packet {
        header: Header {
            version: 2,
            payload_type: 111,
            sequence_number,
            timestamp: u32::from(sequence_number) * 960,
            ssrc: 0x1234_5678,
            ..Header::default()
        },
        payload: bytes::Bytes::from_static(payload),
    }
    .marshal()
    .unwrap()
    .to_vec()
}

fn dropped(reason: &str) -> u64 {
    metrics().dropped.with_label_values(&[reason]).get()
}

/// Waits until the `reason` drop counter passes `before`.
async fn wait_dropped(reason: &str, before: u64) {
    tokio::time::timeout(WAIT, async {
        while dropped(reason) <= before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {reason} drop counted"));
}

async fn next(packets: &mut mpsc::Receiver<RelayPacket>) -> RelayPacket {
    tokio::time::timeout(WAIT, packets.recv())
        .await
        .expect("a relayed packet")
        .expect("the link is open")
}

#[tokio::test]
async fn rtp_and_rtcp_cross_a_link_encrypted_and_arrive_as_sent() {
    let a = RelayEndpoint::bind(loopback()).await.unwrap();
    let b = RelayEndpoint::bind(loopback()).await.unwrap();
    let key = RelayKey::generate();
    let (link, mut packets) = b.accept(a.local_addr().unwrap(), &key).unwrap();
    let mut to_b = a.sender(link, b.local_addr().unwrap(), &key).unwrap();

    let sent = rtp(1, b"a tone in the clear");
    to_b.send_rtp(&sent).await.unwrap();
    assert_eq!(next(&mut packets).await, RelayPacket::Rtp(sent.into()));
    let pli = PictureLossIndication {
        sender_ssrc: 1,
        media_ssrc: 0x1234_5678,
    }
    .marshal()
    .unwrap()
    .to_vec();
    to_b.send_rtcp(&pli).await.unwrap();
    assert_eq!(next(&mut packets).await, RelayPacket::Rtcp(pli.into()));

    // On the wire: the link id, then ciphertext (the payload does not show).
    let wire = UdpSocket::bind(loopback()).await.unwrap();
    let mut to_wire = a.sender(link, wire.local_addr().unwrap(), &key).unwrap();
    to_wire
        .send_rtp(&rtp(2, b"a tone in the clear"))
        .await
        .unwrap();
    let mut datagram = [0; 2048];
    let (len, _) = tokio::time::timeout(WAIT, wire.recv_from(&mut datagram))
        .await
        .unwrap()
        .unwrap();
    let datagram = &datagram[..len];
    assert_eq!(&datagram[..4], &link.to_be_bytes());
    assert!(
        !datagram.windows(6).any(|w| w == b"a tone"),
        "the payload travels encrypted"
    );
    assert_eq!(
        len,
        4 + 12 + 19 + 10,
        "link id, header, payload, 80-bit tag"
    );

    assert!(b.close(link));
    assert!(!b.close(link));
}

#[tokio::test]
async fn a_packet_with_a_bad_tag_or_a_replay_is_dropped_and_counted() {
    let b = RelayEndpoint::bind(loopback()).await.unwrap();
    let to = b.local_addr().unwrap();
    let worker = UdpSocket::bind(loopback()).await.unwrap();
    let key = RelayKey::generate();
    let (link, mut packets) = b.accept(worker.local_addr().unwrap(), &key).unwrap();
    let mut sender_context = key.context().unwrap();
    let mut wrong_context = RelayKey::generate().context().unwrap();
    let datagram = |protected: &[u8]| [link.to_be_bytes().as_slice(), protected].concat();

    // Another key: the tag does not verify.
    let before = dropped("auth");
    let forged = wrong_context.encrypt_rtp(&rtp(1, b"forged")).unwrap();
    worker.send_to(&datagram(&forged[..]), to).await.unwrap();
    wait_dropped("auth", before).await;

    // The right key, one bit flipped in the ciphertext.
    let before = dropped("auth");
    let mut tampered = sender_context
        .encrypt_rtp(&rtp(2, b"tampered"))
        .unwrap()
        .to_vec();
    tampered[14] ^= 1;
    worker.send_to(&datagram(&tampered[..]), to).await.unwrap();
    wait_dropped("auth", before).await;

    // The right key, untouched: it arrives; sent again (a replay), it is dropped.
    let genuine = sender_context.encrypt_rtp(&rtp(3, b"genuine")).unwrap();
    worker.send_to(&datagram(&genuine[..]), to).await.unwrap();
    assert_eq!(
        next(&mut packets).await,
        RelayPacket::Rtp(rtp(3, b"genuine").into())
    );
    let before = dropped("auth");
    worker.send_to(&datagram(&genuine[..]), to).await.unwrap();
    wait_dropped("auth", before).await;

    // Too short to be anything.
    let before = dropped("malformed");
    worker.send_to(&link.to_be_bytes(), to).await.unwrap();
    wait_dropped("malformed", before).await;
    assert!(
        packets.try_recv().is_err(),
        "nothing but the genuine packet arrived"
    );
}

#[tokio::test]
async fn a_packet_from_an_address_that_is_not_the_links_worker_is_dropped_and_counted() {
    let a = RelayEndpoint::bind(loopback()).await.unwrap();
    let b = RelayEndpoint::bind(loopback()).await.unwrap();
    let key = RelayKey::generate();
    let (link, mut packets) = b.accept(a.local_addr().unwrap(), &key).unwrap();

    // A third worker that knows the link and even its key: not the link's worker.
    let outsider = RelayEndpoint::bind(loopback()).await.unwrap();
    let mut from_outsider = outsider
        .sender(link, b.local_addr().unwrap(), &key)
        .unwrap();
    let before = dropped("unknown_source");
    from_outsider.send_rtp(&rtp(1, b"injected")).await.unwrap();
    wait_dropped("unknown_source", before).await;

    // The right worker on a link that is not open here.
    let mut unknown = a.sender(link ^ 1, b.local_addr().unwrap(), &key).unwrap();
    let before = dropped("unknown_link");
    unknown.send_rtp(&rtp(2, b"no such link")).await.unwrap();
    wait_dropped("unknown_link", before).await;

    // The link's worker still gets through.
    let mut to_b = a.sender(link, b.local_addr().unwrap(), &key).unwrap();
    to_b.send_rtp(&rtp(3, b"genuine")).await.unwrap();
    assert_eq!(
        next(&mut packets).await,
        RelayPacket::Rtp(rtp(3, b"genuine").into())
    );
    assert!(packets.try_recv().is_err());

    // A closed link's packets are unknown.
    b.close(link);
    let before = dropped("unknown_link");
    to_b.send_rtp(&rtp(4, b"after close")).await.unwrap();
    wait_dropped("unknown_link", before).await;
}
