//! `webrtc_rooms_plot DIR OUT.png LABEL...`: one PNG comparing the rooms sweeps
//! (`DIR/capacity-<LABEL>.csv`, written by `webrtc_capacity --rooms-of`).

use std::path::PathBuf;

use anyhow::Context;
use remotemedia_loadgen::{plot_rooms, read_csv};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: webrtc_rooms_plot DIR OUT.png LABEL...";
    let dir = PathBuf::from(args.next().context(usage)?);
    let out = PathBuf::from(args.next().context(usage)?);
    let mut series = Vec::new();
    for label in args {
        let path = dir.join(format!("capacity-{label}.csv"));
        match std::fs::read_to_string(&path) {
            Ok(text) => series.push((label, read_csv(&text))),
            Err(err) => eprintln!("skipping {}: {err}", path.display()),
        }
    }
    plot_rooms(&out, &series).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("wrote {}", out.display());
    Ok(())
}
