//! Memory over churn: sequential connect / exchange audio briefly / leave cycles, with the
//! server's RSS read after the first 100 and after the last.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use remotemedia_webrtc::client::{ClientStack, LoadPeer, TestSignal};

use super::error::LoadgenError;
use super::procstat::rss_mb;
use super::stats::round2;
use super::{Options, Target};

/// Audio exchanged per cycle.
const EXCHANGE: Duration = Duration::from_millis(300);
/// Time the server gets to tear sessions down before its RSS is read.
const SETTLE: Duration = Duration::from_secs(2);
/// The cycle after which the reference RSS is read.
const REFERENCE_CYCLE: usize = 100;

/// What a churn run measured. With `--json` this is the last line printed.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnReport {
    pub cycles: usize,
    pub failed: usize,
    /// Cycles in which audio came back.
    pub with_audio: usize,
    pub rss_start_mb: Option<f64>,
    pub rss_after_100_mb: Option<f64>,
    pub rss_after_last_mb: Option<f64>,
    /// Growth from after 100 cycles to after the last, in percent.
    pub growth_pct: Option<f64>,
}

/// Runs `cycles` sequential peers against `target`.
///
/// # Errors
/// When the test signal or the client stack cannot be set up.
pub async fn churn(
    options: &Options,
    target: &Target,
    cycles: usize,
) -> Result<ChurnReport, LoadgenError> {
    let signal = Arc::new(TestSignal::new()?);
    let stack = ClientStack::new(options.ice_ip)?;
    let rss = || options.server_pid.and_then(rss_mb).map(round2);
    let rss_start = rss();
    let mut report = ChurnReport {
        cycles,
        failed: 0,
        with_audio: 0,
        rss_start_mb: rss_start,
        rss_after_100_mb: None,
        rss_after_last_mb: None,
        growth_pct: None,
    };
    let run_id: u32 = rand::random();
    for cycle in 0..cycles {
        match one_cycle(
            &stack,
            &signal,
            target,
            options,
            &format!("churn-{run_id:08x}-{cycle}"),
        )
        .await
        {
            Ok(true) => report.with_audio += 1,
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(%err, cycle, "churn cycle failed");
                report.failed += 1;
            }
        }
        let done = cycle + 1;
        if done == REFERENCE_CYCLE.min(cycles) {
            tokio::time::sleep(SETTLE).await;
            report.rss_after_100_mb = rss();
        }
        if done % 100 == 0 && !options.json {
            println!("{done} cycles, server RSS {:?} MB", rss());
        }
    }
    tokio::time::sleep(SETTLE).await;
    report.rss_after_last_mb = rss();
    if let (Some(reference), Some(last)) = (report.rss_after_100_mb, report.rss_after_last_mb) {
        report.growth_pct = Some(round2((last - reference) / reference * 100.0));
    }
    Ok(report)
}

/// One peer: connect, exchange audio, leave. True when audio came back.
async fn one_cycle(
    stack: &ClientStack,
    signal: &Arc<TestSignal>,
    target: &Target,
    options: &Options,
    peer_id: &str,
) -> Result<bool, LoadgenError> {
    let mut peer = LoadPeer::new(stack, signal, false).await?;
    let (session, _) = match target
        .connect(peer_id, options.manifest.as_deref(), &mut peer)
        .await
    {
        Ok(connected) => connected,
        Err(err) => {
            peer.close().await;
            return Err(err);
        }
    };
    let stop = CancellationToken::new();
    peer.start_sending(Arc::clone(signal), stop.clone());
    tokio::time::sleep(EXCHANGE).await;
    stop.cancel();
    let audio = peer.counters.received.load(Ordering::Relaxed) > 0;
    session.leave().await;
    peer.close().await;
    Ok(audio)
}
