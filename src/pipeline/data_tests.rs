use super::*;
use pb::data_buffer::DataType;

fn wire(data_type: DataType) -> pb::DataBuffer {
    pb::DataBuffer {
        data_type: Some(data_type),
        metadata: HashMap::from([("sequence".to_owned(), "7".to_owned())]),
    }
}

fn audio(samples: Vec<u8>, format: pb::AudioFormat, channels: u32, num: u64) -> pb::DataBuffer {
    wire(DataType::Audio(pb::AudioBuffer {
        samples,
        sample_rate: 48_000,
        channels,
        format: format as i32,
        num_samples: num,
        metadata_json: None,
    }))
}

#[test]
fn f32_audio_round_trips_with_metadata() {
    let frame = AudioFrame {
        samples: vec![0.0, 0.5, -0.25, 1.0],
        sample_rate: 16_000,
        channels: 2,
    };
    let mut env = Envelope::new(RuntimeData::Audio(frame.clone()));
    env.metadata.insert("sequence".into(), "1".into());
    let buffer = env.clone().into_data_buffer();
    let Some(DataType::Audio(a)) = &buffer.data_type else {
        panic!("not audio: {buffer:?}")
    };
    assert_eq!(a.num_samples, 2);
    assert_eq!(a.format, pb::AudioFormat::F32 as i32);
    assert_eq!(Envelope::from_data_buffer(buffer).unwrap(), env);
}

#[test]
fn unspecified_format_reads_as_f32() {
    let bytes: Vec<u8> = [0.25f32, -0.5]
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let env = Envelope::from_data_buffer(audio(bytes, pb::AudioFormat::Unspecified, 1, 0)).unwrap();
    let RuntimeData::Audio(frame) = env.data else {
        panic!()
    };
    assert_eq!(frame.samples, vec![0.25, -0.5]);
    assert_eq!(env.metadata["sequence"], "7");
}

#[test]
fn i16_and_i32_audio_scale_to_unit_range() {
    let bytes: Vec<u8> = [i16::MIN, 0, 16384]
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let env = Envelope::from_data_buffer(audio(bytes, pb::AudioFormat::I16, 1, 3)).unwrap();
    let RuntimeData::Audio(frame) = env.data else {
        panic!()
    };
    assert_eq!(frame.samples, vec![-1.0, 0.0, 0.5]);

    let bytes: Vec<u8> = [i32::MIN, 1 << 30]
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let env = Envelope::from_data_buffer(audio(bytes, pb::AudioFormat::I32, 2, 1)).unwrap();
    let RuntimeData::Audio(frame) = env.data else {
        panic!()
    };
    assert_eq!(frame.samples, vec![-1.0, 0.5]);
    assert_eq!(frame.channels, 2);
    // Output is always f32 with per-channel num_samples.
    let Some(DataType::Audio(out)) = Envelope::new(RuntimeData::Audio(frame))
        .into_data_buffer()
        .data_type
    else {
        panic!()
    };
    assert_eq!(
        (out.format, out.num_samples),
        (pb::AudioFormat::F32 as i32, 1)
    );
}

#[test]
fn malformed_audio_is_a_typed_error() {
    let err = |b: pb::DataBuffer| Envelope::from_data_buffer(b).unwrap_err();
    assert!(matches!(
        err(audio(vec![0; 3], pb::AudioFormat::I16, 1, 0)),
        DataError::SampleBytes { len: 3, size: 2 }
    ));
    assert!(matches!(
        err(audio(vec![0; 6], pb::AudioFormat::I16, 2, 0)),
        DataError::ChannelMismatch {
            samples: 3,
            channels: 2
        }
    ));
    assert!(matches!(
        err(audio(vec![0; 8], pb::AudioFormat::F32, 0, 0)),
        DataError::Channels { got: 0, .. }
    ));
    assert!(matches!(
        err(audio(vec![0; 8], pb::AudioFormat::F32, 1, 5)),
        DataError::NumSamples {
            declared: 5,
            actual: 2,
            total: 2
        }
    ));
    let mut zero_rate = audio(vec![0; 4], pb::AudioFormat::F32, 1, 0);
    if let Some(DataType::Audio(a)) = &mut zero_rate.data_type {
        a.sample_rate = 0;
    }
    assert!(matches!(
        err(zero_rate),
        DataError::SampleRate { got: 0, .. }
    ));
    let mut bad_format = audio(vec![0; 4], pb::AudioFormat::F32, 1, 0);
    if let Some(DataType::Audio(a)) = &mut bad_format.data_type {
        a.format = 99;
    }
    assert!(matches!(err(bad_format), DataError::UnknownFormat(99)));
}

#[test]
fn text_round_trips_and_rejects_bad_utf8() {
    let buffer = wire(DataType::Text(pb::TextBuffer {
        text_data: "héllo".as_bytes().to_vec(),
        encoding: String::new(),
        language: "fr".into(),
        channel: String::new(),
    }));
    let env = Envelope::from_data_buffer(buffer).unwrap();
    assert_eq!(
        env.data,
        RuntimeData::Text {
            text: "héllo".into(),
            language: "fr".into()
        }
    );
    let Some(DataType::Text(out)) = env.into_data_buffer().data_type else {
        panic!()
    };
    assert_eq!(out.encoding, "utf-8");
    assert_eq!(out.language, "fr");

    let bad = wire(DataType::Text(pb::TextBuffer {
        text_data: vec![0xff, 0xfe],
        encoding: "utf-8".into(),
        language: String::new(),
        channel: String::new(),
    }));
    assert!(matches!(
        Envelope::from_data_buffer(bad),
        Err(DataError::TextUtf8(_))
    ));
    let utf16 = wire(DataType::Text(pb::TextBuffer {
        text_data: b"a\0".to_vec(),
        encoding: "utf-16le".into(),
        language: String::new(),
        channel: String::new(),
    }));
    assert!(matches!(
        Envelope::from_data_buffer(utf16),
        Err(DataError::TextEncoding(_))
    ));
}

#[test]
fn json_is_kept_verbatim_and_validated() {
    let payload = r#"{ "b": 1,  "a": [1.50] }"#;
    let buffer = wire(DataType::Json(pb::JsonData {
        json_payload: payload.into(),
        schema_type: "calc".into(),
    }));
    let env = Envelope::from_data_buffer(buffer.clone()).unwrap();
    assert_eq!(env.clone().into_data_buffer(), buffer);

    let bad = wire(DataType::Json(pb::JsonData {
        json_payload: "{nope".into(),
        schema_type: String::new(),
    }));
    assert!(matches!(
        Envelope::from_data_buffer(bad),
        Err(DataError::Json(_))
    ));
}

#[test]
fn binary_defaults_mime_type() {
    let buffer = wire(DataType::Binary(pb::BinaryBuffer {
        data: vec![1, 2, 3],
        mime_type: String::new(),
    }));
    let env = Envelope::from_data_buffer(buffer).unwrap();
    let RuntimeData::Binary { data, mime_type } = &env.data else {
        panic!()
    };
    assert_eq!(
        (&data[..], mime_type.as_str()),
        (&[1u8, 2, 3][..], DEFAULT_MIME_TYPE)
    );
    let Some(DataType::Binary(out)) = env.into_data_buffer().data_type else {
        panic!()
    };
    assert_eq!(out.mime_type, DEFAULT_MIME_TYPE);
}

#[test]
fn control_video_tensor_pass_through() {
    let cases = [
        DataType::Control(pb::ControlMessage {
            segment_id: "s1".into(),
            timestamp_ms: 5,
            ..Default::default()
        }),
        DataType::Video(pb::VideoFrame {
            pixel_data: vec![9; 12],
            width: 2,
            height: 2,
            format: pb::PixelFormat::Rgb24 as i32,
            frame_number: 1,
            timestamp_us: 2,
            ..Default::default()
        }),
        DataType::Tensor(pb::TensorBuffer {
            data: vec![0; 8],
            shape: vec![2],
            dtype: pb::TensorDtype::F32 as i32,
            layout: "n".into(),
        }),
    ];
    for case in cases {
        let buffer = wire(case);
        let env = Envelope::from_data_buffer(buffer.clone()).unwrap();
        assert_eq!(env.into_data_buffer(), buffer);
    }
}

#[test]
fn empty_buffer_is_rejected() {
    assert!(matches!(
        Envelope::from_data_buffer(pb::DataBuffer::default()),
        Err(DataError::NoPayload)
    ));
}
