//! `webrtc_loadgen`: see `remotemedia_loadgen`.

use clap::Parser;
use remotemedia_loadgen::{churn, run, run_rooms, Options, Report, Target};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "error,remotemedia_webrtc=warn,remotemedia_loadgen=warn",
                )
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let options = Options::parse();
    let target = Target::connect_to(&options).await?;
    if let Some(cycles) = options.churn {
        let report = churn(&options, &target, cycles).await?;
        if options.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{report:#?}");
        }
        return Ok(());
    }
    if let Some(rooms_of) = options.rooms_of {
        let report = run_rooms(&options, &target, rooms_of).await?;
        if options.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        return Ok(());
    }
    let report = run(&options, &target).await?;
    if options.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_human(&report);
    }
    Ok(())
}

fn print_human(r: &Report) {
    println!("per peer (steady window): sent / received / lost");
    for (i, p) in r.peers.iter().enumerate() {
        println!(
            "  peer {i:>4}: {:>6} / {:>6} / {:>4}",
            p.sent, p.received, p.lost
        );
    }
    println!(
        "{} of {} peers connected ({:?} failed), steady {} s",
        r.peers_connected, r.peers_requested, r.failures, r.steady_s
    );
    println!(
        "offer->answer    p50 {:.1} p95 {:.1} p99 {:.1} ms",
        r.answer_ms.p50, r.answer_ms.p95, r.answer_ms.p99
    );
    println!(
        "offer->connected p50 {:.1} p95 {:.1} p99 {:.1} ms",
        r.connected_ms.p50, r.connected_ms.p95, r.connected_ms.p99
    );
    println!(
        "packets sent {} received {} lost {}: loss {:.2} % (worst peer {:.2} %)",
        r.packets_sent, r.packets_received, r.packets_lost, r.loss_pct, r.worst_peer_loss_pct
    );
    println!(
        "server-added latency p50 {:.1} p99 {:.1} ms ({} markers on {} peers)",
        r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.markers, r.latency_ms.peers
    );
    println!(
        "server CPU {:?} %, RSS {:?} MB; loadgen CPU {:.1} % (core {:?} %){}",
        r.server_cpu_pct,
        r.server_rss_mb,
        r.loadgen_cpu_pct,
        r.loadgen_core_pct,
        if r.valid {
            ""
        } else {
            ": INVALID, the loadgen's core was saturated"
        }
    );
}
