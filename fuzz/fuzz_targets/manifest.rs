//! A pipeline manifest (YAML or JSON) into the loader and the graph builder: parse, validate,
//! build every node. No media runs. A manifest that loads must load from its own JSON form too,
//! and build (or fail to) the same way. Not compared field by field: serde_json's default float
//! parsing is not correctly rounded (`2.3399999999999998e70` reads back as `2.34e70`), which is
//! no bug of ours.

#![no_main]

use libfuzzer_sys::fuzz_target;
use remotemedia_webrtc::pipeline::{Manifest, Pipeline};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) = Manifest::parse(text) else {
        return;
    };
    let built = Pipeline::new(manifest.clone());
    if let Err(err) = &built {
        // Build errors name the node: rendering them must not fail either.
        assert!(!err.to_string().is_empty());
    }
    let json = serde_json::to_string(&manifest).expect("a loaded manifest serializes");
    let again = Manifest::parse(&json).expect("a loaded manifest's JSON loads");
    assert_eq!(again.nodes.len(), manifest.nodes.len());
    assert_eq!(again.connections, manifest.connections);
    assert_eq!(Pipeline::new(again).is_ok(), built.is_ok());
});
