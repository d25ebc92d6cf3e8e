//! A session manager assembled from the configuration: the pipelines with their byte limits,
//! the Opus settings (flags, overridden by the manifest key by key) and the WebRTC stack.
//! One process (`grpc`, `websocket` mode) and the media worker both start theirs here.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::error::Error;
use crate::peer::{SessionManager, SessionSettings, WebRtcStack};
use crate::pipeline::{NodeLimits, OpusSettings, Pipeline, PipelineCatalog};

/// Session events queued between the session host and signaling.
pub const SESSION_EVENT_QUEUE: usize = 1024;

/// Loads the pipeline and starts the WebRTC stack: the session host of `grpc` and
/// `websocket` mode, and the events it reports for signaling to deliver.
///
/// # Errors
/// A broken manifest or a WebRTC setup failure.
pub async fn session_manager(
    config: &Config,
) -> Result<
    (
        Arc<SessionManager>,
        mpsc::Receiver<crate::signaling::SessionEvent>,
    ),
    Error,
> {
    let pipelines =
        PipelineCatalog::load(config.manifest.as_deref(), config.manifest_dir.as_deref())?
            .with_limits(NodeLimits {
                text_buffer_bytes: config.limits.max_text_buffer_bytes,
                utterance_bytes: config.limits.max_utterance_bytes,
            });
    if let Some(name) = config.media.room_manifest.as_deref() {
        // At start, not at the first room: a typo must not wait for a call to show.
        pipelines.get(Some(name))?;
    }
    let opus = opus_settings(config, pipelines.default_pipeline());
    let public_ip = crate::public_address::resolve(&config.media).await?;
    let stack = WebRtcStack::new(&config.media, public_ip).await?;
    let (event_tx, events) = mpsc::channel(SESSION_EVENT_QUEUE);
    let sessions = Arc::new(SessionManager::new(
        stack,
        pipelines,
        SessionSettings {
            connect_timeout: config.media.connect_timeout,
            media_timeout: config.media.media_timeout,
            capacity: match config.mode {
                crate::config::Mode::Worker => config.cluster.capacity,
                _ => config.limits.max_peers,
            },
            enable_data_channel: config.media.enable_data_channel,
            jitter_buffer: Duration::from_millis(u64::from(config.media.jitter_buffer_ms)),
            opus,
            pipeline_queue_frames: config.limits.pipeline_queue_frames,
            pipeline_queue_bytes: config.limits.pipeline_queue_bytes,
            max_datachannel_message_bytes: config.limits.max_datachannel_message_bytes,
            datachannel_send_queue_bytes: config.limits.datachannel_send_queue_bytes,
            max_datachannels: config.limits.max_datachannels,
            max_rooms: config.limits.max_rooms,
            max_room_participants: config.limits.max_room_participants,
            room_video_last_n: config.media.room_video_last_n,
            room_manifest: config.media.room_manifest.clone(),
        },
        event_tx,
    ));
    Ok((sessions, events))
}

/// The `--opus-*` flags, overridden by each key the manifest's `media.opus` block really sets.
///
/// The parsed manifest fills absent keys with defaults, so which keys were written is read
/// from the file itself (src/pipeline keeps its types; this is the only place that merges).
fn opus_settings(config: &Config, pipeline: &Pipeline) -> OpusSettings {
    let flags = &config.media;
    let mut opus = OpusSettings {
        bitrate: flags.opus_bitrate,
        complexity: flags.opus_complexity,
        fec: flags.opus_fec,
        dtx: flags.opus_dtx,
    };
    let manifest = &pipeline.manifest().media.opus;
    let written = config
        .manifest
        .as_ref()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| serde_yaml::from_str::<serde_yaml::Value>(&text).ok());
    let block = written.as_ref().and_then(|m| m.get("media")?.get("opus"));
    if let Some(block) = block {
        let set = |key: &str| block.get(key).is_some();
        if set("bitrate") {
            opus.bitrate = manifest.bitrate;
        }
        if set("complexity") {
            opus.complexity = manifest.complexity;
        }
        if set("fec") {
            opus.fec = manifest.fec;
        }
        if set("dtx") {
            opus.dtx = manifest.dtx;
        }
    }
    opus
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn opus_with(manifest_opus: Option<&str>, flags: &[&str]) -> OpusSettings {
        let mut args = vec!["webrtc_server"];
        args.extend_from_slice(flags);
        let mut config = <Config as clap::Parser>::parse_from(args);
        if let Some(block) = manifest_opus {
            let path = std::env::temp_dir().join(format!("opus-{}.yaml", uuid::Uuid::new_v4()));
            let text = format!("version: v1\nnodes: []\nconnections: []\nmedia:\n  opus:\n{block}");
            std::fs::write(&path, text).unwrap();
            config.manifest = Some(path);
        }
        let catalog = PipelineCatalog::load(config.manifest.as_deref(), None).unwrap();
        let opus = opus_settings(&config, catalog.default_pipeline());
        if let Some(path) = &config.manifest {
            let _ = std::fs::remove_file(path);
        }
        opus
    }

    #[test]
    fn opus_flags_are_defaults_the_manifest_overrides_key_by_key() {
        let flags = [
            "--opus-bitrate",
            "32000",
            "--opus-complexity",
            "5",
            "--opus-dtx",
            "true",
        ];
        let expected = OpusSettings {
            bitrate: 32_000,
            complexity: 5,
            fec: true,
            dtx: true,
        };
        assert_eq!(opus_with(None, &flags), expected);
        // The manifest sets complexity to its own default value: it still wins.
        let merged = opus_with(Some("    complexity: 10\n    fec: false\n"), &flags);
        assert_eq!(
            merged,
            OpusSettings {
                complexity: 10,
                fec: false,
                ..expected
            }
        );
    }
}
