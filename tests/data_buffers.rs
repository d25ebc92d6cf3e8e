//! DataBuffers of the original's clients: `num_samples` in either meaning, and the proto
//! additions of later originals (numpy, file, video codec, audio metadata_json, text channel)
//! decoded with the original's field numbers and carried through pipelines, a 1-D numpy array
//! usable as audio, a file path never opened.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::path::Path;

use common::client::connect_with_data_channel;
use common::TestServer;
use prost::Message;
use remotemedia_webrtc::pipeline::{
    DataError, Envelope, Manifest, Pipeline, RuntimeData, AUDIO_METADATA_JSON_KEY,
};
use remotemedia_webrtc::proto::common::{self as pb, data_buffer::DataType, DataBuffer};
use tokio_util::sync::CancellationToken;

// A protobuf writer, so the bytes follow the original's numbering, not our generated code.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
fn tag_varint(field: u64, v: u64, out: &mut Vec<u8>) {
    varint(field << 3, out);
    varint(v, out);
}
fn tag_bytes(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint((field << 3) | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}
fn packed(values: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        varint(*v, &mut out);
    }
    out
}
fn with_metadata(mut buffer: Vec<u8>, key: &str, value: &str) -> Vec<u8> {
    let mut entry = Vec::new();
    tag_bytes(1, key.as_bytes(), &mut entry);
    tag_bytes(2, value.as_bytes(), &mut entry);
    tag_bytes(10, &entry, &mut buffer);
    buffer
}

fn f32_bytes(samples: &[f32]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// DataBuffer{numpy = 8: NumpyBuffer{data 1, shape 2, dtype 3, strides 4, c_contiguous 5}}.
fn numpy_bytes(data: &[u8], shape: &[u64], dtype: &str, stride: u64) -> Vec<u8> {
    let mut array = Vec::new();
    tag_bytes(1, data, &mut array);
    tag_bytes(2, &packed(shape), &mut array);
    tag_bytes(3, dtype.as_bytes(), &mut array);
    tag_bytes(4, &packed(&[stride]), &mut array);
    tag_varint(5, 1, &mut array);
    let mut buffer = Vec::new();
    tag_bytes(8, &array, &mut buffer);
    buffer
}

/// DataBuffer{file = 9: FileBuffer{path 1, filename 2, mime_type 3, offset 5, stream_id 7}}.
fn file_bytes(path: &str) -> Vec<u8> {
    let mut file = Vec::new();
    tag_bytes(1, path.as_bytes(), &mut file);
    tag_bytes(2, b"speech.wav", &mut file);
    tag_bytes(3, b"audio/wav", &mut file);
    tag_varint(5, 44, &mut file);
    tag_bytes(7, b"mic", &mut file);
    let mut buffer = Vec::new();
    tag_bytes(9, &file, &mut buffer);
    buffer
}

/// DataBuffer{video = 2: VideoFrame{pixel_data 1, width 2, height 3, format 4 = ENCODED (255),
/// frame_number 5, codec 7 = H264 (2), is_keyframe 8}}.
fn encoded_video_bytes() -> Vec<u8> {
    let mut frame = Vec::new();
    tag_bytes(1, &[0, 0, 0, 1, 0x65, 0x88], &mut frame);
    tag_varint(2, 640, &mut frame);
    tag_varint(3, 480, &mut frame);
    tag_varint(4, 255, &mut frame);
    tag_varint(5, 9, &mut frame);
    tag_varint(7, 2, &mut frame);
    tag_varint(8, 1, &mut frame);
    let mut buffer = Vec::new();
    tag_bytes(2, &frame, &mut buffer);
    buffer
}

/// DataBuffer{text = 5: TextBuffer{text_data 1, encoding 2, channel 4 = "ui"}}.
fn ui_text_bytes() -> Vec<u8> {
    let mut text = Vec::new();
    tag_bytes(1, b"**bold**", &mut text);
    tag_bytes(2, b"utf-8", &mut text);
    tag_bytes(4, b"ui", &mut text);
    let mut buffer = Vec::new();
    tag_bytes(5, &text, &mut buffer);
    buffer
}

/// DataBuffer{audio = 1: AudioBuffer{samples 1, sample_rate 2, channels 3, format 4 = F32,
/// num_samples 5, metadata_json 6}}.
fn annotated_audio_bytes(samples: &[f32], json: &[u8]) -> Vec<u8> {
    let mut audio = Vec::new();
    tag_bytes(1, &f32_bytes(samples), &mut audio);
    tag_varint(2, 48_000, &mut audio);
    tag_varint(3, 1, &mut audio);
    tag_varint(4, 1, &mut audio);
    tag_varint(5, samples.len() as u64, &mut audio);
    tag_bytes(6, json, &mut audio);
    let mut buffer = Vec::new();
    tag_bytes(1, &audio, &mut buffer);
    buffer
}

#[test]
fn the_later_originals_fields_decode_with_their_numbers() {
    let numpy = DataBuffer::decode(&numpy_bytes(&[1, 2, 3, 4], &[1], "float32", 4)[..]).unwrap();
    let Some(DataType::Numpy(array)) = &numpy.data_type else {
        panic!("{numpy:?}")
    };
    assert_eq!(
        (&array.data[..], &array.shape[..], array.dtype.as_str()),
        (&[1u8, 2, 3, 4][..], &[1u64][..], "float32")
    );
    assert_eq!(
        (&array.strides[..], array.c_contiguous),
        (&[4i64][..], true)
    );

    let file = DataBuffer::decode(&file_bytes("/data/in.wav")[..]).unwrap();
    let Some(DataType::File(file)) = &file.data_type else {
        panic!("{file:?}")
    };
    assert_eq!(
        (
            file.path.as_str(),
            file.filename.as_str(),
            file.mime_type.as_str()
        ),
        ("/data/in.wav", "speech.wav", "audio/wav")
    );
    assert_eq!((file.offset, file.stream_id.as_str()), (44, "mic"));

    let video = DataBuffer::decode(&encoded_video_bytes()[..]).unwrap();
    let Some(DataType::Video(frame)) = &video.data_type else {
        panic!("{video:?}")
    };
    assert_eq!(frame.format(), pb::PixelFormat::Encoded);
    assert_eq!(frame.codec(), pb::VideoCodec::H264);
    assert!(frame.is_keyframe);
    assert_eq!(pb::PixelFormat::I420 as i32, 5);
    assert_eq!(pb::PixelFormat::Nv12 as i32, 6);
    assert_eq!(pb::VideoCodec::Vp8 as i32, 1);
    assert_eq!(pb::VideoCodec::Av1 as i32, 3);

    let text = DataBuffer::decode(&ui_text_bytes()[..]).unwrap();
    let Some(DataType::Text(text)) = &text.data_type else {
        panic!("{text:?}")
    };
    assert_eq!(text.channel, "ui");

    let audio = DataBuffer::decode(&annotated_audio_bytes(&[0.5], b"{\"speaker\":1}")[..]).unwrap();
    let Some(DataType::Audio(audio)) = &audio.data_type else {
        panic!("{audio:?}")
    };
    assert_eq!(
        audio.metadata_json.as_deref(),
        Some(&b"{\"speaker\":1}"[..])
    );

    // Ours writes the same bytes back.
    for bytes in [
        numpy_bytes(&[1, 2, 3, 4], &[1], "float32", 4),
        file_bytes("/data/in.wav"),
        encoded_video_bytes(),
        ui_text_bytes(),
        annotated_audio_bytes(&[0.5], b"{}"),
    ] {
        assert_eq!(
            DataBuffer::decode(&bytes[..]).unwrap().encode_to_vec(),
            bytes
        );
    }
}

async fn run(pipeline: &Pipeline, inputs: Vec<Envelope>) -> Vec<Envelope> {
    let mut session = pipeline.start(CancellationToken::new()).unwrap();
    for env in inputs {
        session.input.send(env).await.unwrap();
    }
    drop(session.input);
    let mut out = Vec::new();
    while let Some(env) = session.output.recv().await {
        out.push(env);
    }
    out
}

fn pipeline(yaml: &str) -> Pipeline {
    Pipeline::new(Manifest::parse(yaml).unwrap()).unwrap()
}

fn envelope(bytes: &[u8]) -> Envelope {
    Envelope::from_data_buffer(DataBuffer::decode(bytes).unwrap()).unwrap()
}

#[tokio::test]
async fn later_buffers_pass_through_pipelines_unchanged() {
    let buffers = [
        numpy_bytes(&f32_bytes(&[0.1, 0.2]), &[2], "float32", 4),
        with_metadata(file_bytes("/no/such/file.wav"), "sequence", "2"),
        encoded_video_bytes(),
        ui_text_bytes(),
        with_metadata(
            annotated_audio_bytes(&[0.25; 480], b"{\"speaker\":\"a\"}"),
            "sequence",
            "5",
        ),
    ];
    for manifest in [
        "version: v1\nnodes: []\n",
        "version: v1\nnodes:\n  - {id: p, node_type: PassThrough}\n",
    ] {
        let out = run(
            &pipeline(manifest),
            buffers.iter().map(|b| envelope(b)).collect(),
        )
        .await;
        let back: Vec<DataBuffer> = out.into_iter().map(Envelope::into_data_buffer).collect();
        let sent: Vec<DataBuffer> = buffers
            .iter()
            .map(|b| DataBuffer::decode(&b[..]).unwrap())
            .collect();
        assert_eq!(back, sent, "{manifest}");
    }
    // The annotation rides in the envelope's metadata between nodes, never on the wire's map.
    let env = envelope(&annotated_audio_bytes(&[0.0], b"{}"));
    assert!(env.metadata.contains_key(AUDIO_METADATA_JSON_KEY));
    let DataBuffer { metadata, .. } = env.into_data_buffer();
    assert!(metadata.is_empty(), "{metadata:?}");
}

fn audio_out(out: &[Envelope]) -> Vec<(Vec<f32>, u32)> {
    out.iter()
        .filter_map(|e| match &e.data {
            RuntimeData::Audio(f) => Some((f.samples.clone(), f.sample_rate)),
            _ => None,
        })
        .collect()
}

const CHUNKER: &str =
    "version: v1\nnodes:\n  - {id: c, node_type: AudioChunkerNode, params: {chunkSize: 4}}\n";

#[tokio::test]
async fn a_1d_numpy_array_is_audio_where_a_node_wants_audio() {
    let samples = [0.5f32, -0.5, 0.25, -0.25];
    // float32, 48 kHz by default.
    let out = run(
        &pipeline(CHUNKER),
        vec![envelope(&numpy_bytes(
            &f32_bytes(&samples),
            &[4],
            "float32",
            4,
        ))],
    )
    .await;
    assert_eq!(audio_out(&out), [(samples.to_vec(), 48_000)]);
    // int16, at the rate its metadata names.
    let i16s: Vec<u8> = [16384i16, -16384, 8192, -8192]
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let out = run(
        &pipeline(CHUNKER),
        vec![envelope(&with_metadata(
            numpy_bytes(&i16s, &[4], "int16", 2),
            "sample_rate",
            "16000",
        ))],
    )
    .await;
    assert_eq!(audio_out(&out), [(samples.to_vec(), 16_000)]);
    // 2-D, float64 or strided arrays are not audio: the chunker passes them on as they are.
    for bytes in [
        numpy_bytes(&f32_bytes(&samples), &[2, 2], "float32", 4),
        numpy_bytes(&[0; 32], &[4], "float64", 8),
        numpy_bytes(&f32_bytes(&samples), &[2], "float32", 8),
    ] {
        let out = run(&pipeline(CHUNKER), vec![envelope(&bytes)]).await;
        assert_eq!(out, [envelope(&bytes)]);
    }
    // A node that takes anything gets the array itself.
    let bytes = numpy_bytes(&f32_bytes(&samples), &[4], "float32", 4);
    let out = run(
        &pipeline("version: v1\nnodes:\n  - {id: p, node_type: PassThrough}\n"),
        vec![envelope(&bytes)],
    )
    .await;
    assert_eq!(out, [envelope(&bytes)]);
}

#[tokio::test]
async fn a_file_buffer_s_path_is_data_and_never_opened() {
    // A real WAV file: were its path opened and read, a chunker would emit its audio.
    let wav = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/speech_48k.wav");
    assert!(wav.is_file());
    let bytes = file_bytes(wav.to_str().unwrap());
    let out = run(&pipeline(CHUNKER), vec![envelope(&bytes)]).await;
    assert!(audio_out(&out).is_empty(), "the file was read as audio");
    assert_eq!(out, [envelope(&bytes)]);
    let out = run(&pipeline("version: v1\n"), vec![envelope(&bytes)]).await;
    let back = out.into_iter().next().unwrap().into_data_buffer();
    // Returned as sent: no size, no contents filled in.
    assert_eq!(back.encode_to_vec(), bytes);
}

fn stereo(num_samples: u64) -> DataBuffer {
    // 3 frames of interleaved L/R.
    let mut audio = Vec::new();
    tag_bytes(
        1,
        &f32_bytes(&[0.1, -0.1, 0.2, -0.2, 0.3, -0.3]),
        &mut audio,
    );
    tag_varint(2, 48_000, &mut audio);
    tag_varint(3, 2, &mut audio);
    tag_varint(4, 1, &mut audio);
    tag_varint(5, num_samples, &mut audio);
    let mut buffer = Vec::new();
    tag_bytes(1, &audio, &mut buffer);
    DataBuffer::decode(&buffer[..]).unwrap()
}

#[test]
fn num_samples_is_read_as_the_original_s_total_or_our_per_channel_count() {
    let original = Envelope::from_data_buffer(stereo(6)).unwrap();
    let ours = Envelope::from_data_buffer(stereo(3)).unwrap();
    let unset = Envelope::from_data_buffer(stereo(0)).unwrap();
    assert_eq!(original, ours);
    assert_eq!(original, unset);
    let RuntimeData::Audio(frame) = &ours.data else {
        panic!()
    };
    assert_eq!((frame.channels, frame.samples.len()), (2, 6));
    let err = Envelope::from_data_buffer(stereo(4)).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::NumSamples {
                declared: 4,
                actual: 3,
                total: 6
            }
        ),
        "{err}"
    );
    // What we write: per channel.
    let Some(DataType::Audio(written)) = ours.into_data_buffer().data_type else {
        panic!()
    };
    assert_eq!(written.num_samples, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_buffers_come_back_over_the_data_channel() {
    common::init_tracing();
    let server = TestServer::start().await;
    let (_signaling, mut peer, channel) =
        connect_with_data_channel(&server.grpc_url(), "numpy").await;
    let sent = [
        numpy_bytes(&f32_bytes(&[0.1; 960]), &[960], "float32", 4),
        file_bytes("/etc/hostname"),
        encoded_video_bytes(),
        ui_text_bytes(),
    ];
    for bytes in &sent {
        channel
            .send(&bytes::Bytes::from(bytes.clone()))
            .await
            .unwrap();
    }
    let mut back = Vec::new();
    for _ in 0..sent.len() {
        let bytes = tokio::time::timeout(common::WAIT, peer.messages.recv())
            .await
            .expect("a DataBuffer came back")
            .unwrap();
        back.push(DataBuffer::decode(bytes).unwrap());
    }
    let sent: Vec<DataBuffer> = sent
        .iter()
        .map(|b| DataBuffer::decode(&b[..]).unwrap())
        .collect();
    assert_eq!(back, sent);
    peer.close().await;
}
