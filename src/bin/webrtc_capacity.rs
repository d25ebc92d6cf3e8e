//! `webrtc_capacity`: the capacity sweep (see `remotemedia_webrtc::loadgen::sweep`).

use clap::Parser;
use remotemedia_webrtc::loadgen::{sweep, SweepOptions};

fn main() -> anyhow::Result<()> {
    let options = SweepOptions::parse();
    sweep(&options)?;
    Ok(())
}
