use super::*;

/// A VP8 RTP payload with a 15-bit picture id and TL0PICIDX; a keyframe carries `size`.
fn packet(picture_id: u16, tl0: u8, start: bool, keyframe: bool, size: (u16, u16)) -> Vec<u8> {
    let [high, low] = picture_id.to_be_bytes();
    let mut p = vec![
        0x80 | if start { 0x10 } else { 0 },
        0xC0,
        0x80 | high,
        low,
        tl0,
    ];
    p.extend_from_slice(&[if keyframe { 0x10 } else { 0x11 }, 0x02, 0x00]);
    if keyframe {
        p.extend_from_slice(&[0x9d, 0x01, 0x2a]);
        p.extend_from_slice(&size.0.to_le_bytes());
        p.extend_from_slice(&size.1.to_le_bytes());
    }
    p.extend_from_slice(&[0xAA; 8]);
    p
}

fn ids(p: &[u8]) -> (u16, u8) {
    let d = Vp8Descriptor::parse(p).expect("valid descriptor");
    (
        d.picture_id.expect("has a picture id").0,
        d.tl0picidx.expect("has TL0PICIDX"),
    )
}

#[test]
fn parses_the_descriptor_fields() {
    let p = packet(0x1234, 7, true, false, (0, 0));
    let d = Vp8Descriptor::parse(&p).expect("valid");
    assert!(d.start_of_partition);
    assert_eq!(d.partition_id, 0);
    assert_eq!(d.picture_id, Some((0x1234, true)));
    assert_eq!(d.tl0picidx, Some(7));
    assert_eq!(d.payload_offset, 5);

    // The minimal descriptor: one byte, no extensions.
    let d = Vp8Descriptor::parse(&[0x10, 0x00]).expect("valid");
    assert_eq!((d.picture_id, d.payload_offset), (None, 1));
    // 7-bit picture id and a T/K byte.
    let d = Vp8Descriptor::parse(&[0x90, 0xA0, 0x05, 0x40, 0x00]).expect("valid");
    assert_eq!(d.picture_id, Some((5, false)));
    assert_eq!(d.temporal_id, Some(1));
    assert_eq!(d.payload_offset, 4);
}

#[test]
fn truncated_descriptors_are_refused_not_panicked_on() {
    let full = packet(0x1234, 7, true, true, (640, 360));
    for len in 0..5 {
        assert_eq!(Vp8Descriptor::parse(&full[..len]), None, "{len} bytes");
    }
    let mut rewriter = Vp8Rewriter::new();
    assert!(!rewriter.rewrite(&mut [0x80, 0x80], false));
    // A descriptor with no payload after it: valid, but no keyframe to size.
    let d = Vp8Descriptor::parse(&full[..5]).expect("descriptor alone");
    assert_eq!(d.keyframe_size(&full[..5]), None);
    assert_eq!(d.keyframe_size(&full[..12]), None, "frame header cut short");
}

#[test]
fn keyframes_and_their_size_are_read_from_the_frame_header() {
    let key = packet(1, 0, true, true, (1280, 720));
    let d = Vp8Descriptor::parse(&key).expect("valid");
    assert!(d.is_keyframe(&key));
    assert_eq!(d.keyframe_size(&key), Some((1280, 720)));

    let delta = packet(2, 0, true, false, (0, 0));
    let d = Vp8Descriptor::parse(&delta).expect("valid");
    assert!(!d.is_keyframe(&delta));
    assert_eq!(d.keyframe_size(&delta), None);

    // A keyframe's continuation packet does not start it.
    let cont = packet(1, 0, false, true, (1280, 720));
    assert!(!Vp8Descriptor::parse(&cont)
        .expect("valid")
        .is_keyframe(&cont));

    // The scaling bits above the 14-bit size are not part of it.
    let mut scaled = packet(1, 0, true, true, (320 | 0x4000, 180 | 0x8000));
    let d = Vp8Descriptor::parse(&scaled).expect("valid");
    assert_eq!(d.keyframe_size(&scaled), Some((320, 180)));
    scaled[8] = 0; // broken start code
    assert_eq!(d.keyframe_size(&scaled), None);
}

#[test]
fn picture_ids_and_tl0picidx_continue_across_a_layer_switch() {
    let mut r = Vp8Rewriter::new();
    let mut low = packet(100, 10, true, true, (320, 180));
    assert!(r.rewrite(&mut low, true));
    assert_eq!(ids(&low), (100, 10), "the first layer keeps its numbering");
    let mut low = packet(101, 11, true, false, (0, 0));
    assert!(r.rewrite(&mut low, false));
    assert_eq!(ids(&low), (101, 11));

    // The high layer numbers its pictures independently.
    let mut high = packet(30_000, 200, true, true, (1280, 720));
    assert!(r.rewrite(&mut high, true));
    assert_eq!(ids(&high), (102, 12));
    let mut high = packet(30_001, 201, true, false, (0, 0));
    assert!(r.rewrite(&mut high, false));
    assert_eq!(ids(&high), (103, 13));
    // The rest of the packet is untouched.
    assert_eq!(&high[5..], &packet(30_001, 201, true, false, (0, 0))[5..]);
}

#[test]
fn rewritten_ids_wrap_within_15_and_8_bits() {
    let mut r = Vp8Rewriter::new();
    let mut p = packet(0x7fff, 255, true, true, (320, 180));
    r.rewrite(&mut p, true);
    let mut p = packet(5, 9, true, true, (320, 180));
    assert!(r.rewrite(&mut p, true));
    assert_eq!(ids(&p), (0, 0));
    let mut p = packet(6, 10, true, false, (0, 0));
    r.rewrite(&mut p, false);
    assert_eq!(ids(&p), (1, 1));
}

#[test]
fn short_picture_ids_wrap_at_128() {
    let mut r = Vp8Rewriter::new();
    // X, S; I only; 7-bit picture id 127; then a keyframe tag.
    let mut p = [0x90, 0x80, 127, 0x00, 0, 0];
    assert!(r.rewrite(&mut p, true));
    let mut p = [0x90, 0x80, 0, 0x01, 0, 0];
    assert!(r.rewrite(&mut p, false));
    assert_eq!(p[2], 0);
    // A switch to a stream at 40 continues at 1.
    let mut p = [0x90, 0x80, 40, 0x00, 0, 0];
    assert!(r.rewrite(&mut p, true));
    assert_eq!(p[2], 1);
}
