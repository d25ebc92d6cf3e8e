//! `webrtc_capacity`: the capacity sweep (see `remotemedia_loadgen::sweep`).

use clap::Parser;
use remotemedia_loadgen::{sweep, SweepOptions};

fn main() -> anyhow::Result<()> {
    let options = SweepOptions::parse();
    sweep(&options)?;
    Ok(())
}
