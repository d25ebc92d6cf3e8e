//! One data-channel message into the server peer's adapter: the first byte says whether SCTP
//! delivered it as a string or as binary, the rest is the message. What the adapter accepts
//! becomes pipeline input; sent back (a loopback pipeline returns it unchanged) it must read
//! back as the same payload.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use remotemedia_webrtc::fuzzing::{data_channel_message, data_channel_reply};
use remotemedia_webrtc::pipeline::{Envelope, RuntimeData};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, message)) = data.split_first() else {
        return;
    };
    let is_string = kind & 1 == 1;
    let Some(input) = data_channel_message(is_string, Bytes::copy_from_slice(message)) else {
        return;
    };
    let reply = data_channel_reply(input.clone());
    let echoed = data_channel_message(false, reply).expect("the server's own reply decodes");
    assert!(same(&input, &echoed), "{input:?} came back as {echoed:?}");
});

/// Equality with audio compared bit for bit (a NaN sample must come back as that NaN).
fn same(a: &Envelope, b: &Envelope) -> bool {
    if a.metadata != b.metadata {
        return false;
    }
    match (&a.data, &b.data) {
        (RuntimeData::Audio(x), RuntimeData::Audio(y)) => {
            x.sample_rate == y.sample_rate
                && x.channels == y.channels
                && x.samples.len() == y.samples.len()
                && x.samples
                    .iter()
                    .zip(&y.samples)
                    .all(|(p, q)| p.to_bits() == q.to_bits())
        }
        (x, y) => x == y,
    }
}
