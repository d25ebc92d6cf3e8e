//! A pipeline manifest (YAML or JSON) into the loader and the graph builder: parse, validate,
//! build every node. No media runs. A manifest that loads must survive its own JSON form.

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
    if let Err(err) = Pipeline::new(manifest.clone()) {
        // Build errors name the node: rendering them must not fail either.
        assert!(!err.to_string().is_empty());
    }
    let json = serde_json::to_string(&manifest).expect("a loaded manifest serializes");
    let again = Manifest::parse(&json).expect("a loaded manifest's JSON loads");
    assert_eq!(again, manifest);
});
