//! The capacity sweep (`webrtc_capacity`): a fresh server per step pinned to one core, the
//! loadgen pinned to the other, 20, 40, 60... peers until loss or latency passes its limit;
//! a progress line per step, then the table as text, CSV and a PNG plot.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::procstat::rss_mb;
use super::row::SweepRow;
use super::Protocol;

/// `webrtc_capacity`'s flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "webrtc_capacity",
    about = "Capacity sweep: peers until loss or latency breaks"
)]
pub struct SweepOptions {
    /// Name of the sweep (file names under --out-dir, table title).
    #[arg(long, env = "SWEEP_LABEL", default_value = "loopback")]
    pub label: String,
    /// Manifest the server runs (a fresh server per step); ignored with --external-pid.
    #[arg(long, env = "SWEEP_MANIFEST", default_value = "examples/loopback.yaml")]
    pub manifest: PathBuf,
    #[arg(long, env = "SWEEP_START", default_value_t = 20)]
    pub start: usize,
    #[arg(long, env = "SWEEP_STEP", default_value_t = 20)]
    pub step: usize,
    #[arg(long, env = "SWEEP_MAX", default_value_t = 400)]
    pub max: usize,
    /// Steady window of each step.
    #[arg(long, env = "SWEEP_DURATION_S", default_value_t = 20.0)]
    pub duration_s: f64,
    #[arg(long, env = "SWEEP_RAMP_PER_S", default_value_t = 20.0)]
    pub ramp_per_s: f64,
    /// Stop after a step above this loss (percent).
    #[arg(long, env = "SWEEP_LOSS_LIMIT", default_value_t = 0.5)]
    pub loss_limit: f64,
    /// Stop after a step above this latency p99 (ms).
    #[arg(long, env = "SWEEP_LATENCY_LIMIT_MS", default_value_t = 60.0)]
    pub latency_limit_ms: f64,
    /// Core the server is pinned to (`taskset`).
    #[arg(long, env = "SWEEP_SERVER_CORE", default_value_t = 0)]
    pub server_core: usize,
    /// Core the loadgen is pinned to.
    #[arg(long, env = "SWEEP_LOADGEN_CORE", default_value_t = 1)]
    pub loadgen_core: usize,
    /// The server's address (gRPC listener, ICE candidates).
    #[arg(long, env = "SWEEP_SERVER_IP", default_value = "127.0.0.1")]
    pub server_ip: IpAddr,
    #[arg(long, env = "SWEEP_GRPC_PORT", default_value_t = 50151)]
    pub grpc_port: u16,
    /// The loadgen's ICE address.
    #[arg(long, env = "SWEEP_CLIENT_IP", default_value = "127.0.0.1")]
    pub client_ip: IpAddr,
    /// Run the server inside this network namespace (`ip netns exec`).
    #[arg(long, env = "SWEEP_NETNS")]
    pub netns: Option<String>,
    /// Sweep an already running server with this pid instead of starting ours per step
    /// (Janus); `--server-url` is where it listens.
    #[arg(long, env = "SWEEP_EXTERNAL_PID")]
    pub external_pid: Option<u32>,
    #[arg(long, env = "SWEEP_SERVER_URL")]
    pub server_url: Option<String>,
    #[arg(long, env = "SWEEP_PROTOCOL", value_enum, default_value = "grpc")]
    pub protocol: Protocol,
    /// Rooms of this many participants (`webrtc_loadgen --rooms-of`) instead of echo peers:
    /// --start, --step and --max then count forwarded streams, R·P·(P−1), each step the
    /// nearest whole number of rooms.
    #[arg(long, env = "SWEEP_ROOMS_OF")]
    pub rooms_of: Option<usize>,
    /// The server and loadgen binaries (default: next to this one).
    #[arg(long, env = "SWEEP_SERVER_BIN")]
    pub server_bin: Option<PathBuf>,
    #[arg(long, env = "SWEEP_LOADGEN_BIN")]
    pub loadgen_bin: Option<PathBuf>,
    #[arg(long, env = "SWEEP_OUT_DIR", default_value = "target/bench")]
    pub out_dir: PathBuf,
    /// A note printed with the table and kept in the CSV (e.g. "noisy: shared machine").
    #[arg(long, env = "SWEEP_NOTE", default_value = "")]
    pub note: String,
}

/// Within the loss and latency limits with every peer connected. An invalid step (the
/// loadgen's core was busy) does not stop the sweep; the table marks it.
fn within(row: &SweepRow, options: &SweepOptions) -> bool {
    row.loss_pct <= options.loss_limit
        && row.latency_p99_ms <= options.latency_limit_ms
        && row.connected == row.peers
}

/// Runs the sweep; returns its rows (also printed and written under `--out-dir`).
///
/// # Errors
/// When a binary cannot be started or the output cannot be written.
pub fn sweep(options: &SweepOptions) -> std::io::Result<Vec<SweepRow>> {
    let here = std::env::current_exe()?;
    let dir = here.parent().map(Path::to_path_buf).unwrap_or_default();
    let server_bin = options
        .server_bin
        .clone()
        .unwrap_or_else(|| dir.join("webrtc_server"));
    let loadgen_bin = options
        .loadgen_bin
        .clone()
        .unwrap_or_else(|| dir.join("webrtc_loadgen"));
    std::fs::create_dir_all(&options.out_dir)?;
    println!(
        "capacity sweep '{}': server on core {}, loadgen on core {}, {} s per step{}",
        options.label,
        options.server_core,
        options.loadgen_core,
        options.duration_s,
        if options.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", options.note)
        }
    );
    let mut rows = Vec::new();
    let mut target = options.start;
    while target <= options.max {
        let peers = options.peers_for(target);
        let row = step(options, &server_bin, &loadgen_bin, peers)?;
        println!(
            "  {:>4} streams, {:>4} peers: {}/{} connected, server CPU {:5.1} %, RSS {:6.1} MB, loss {:5.2} %, latency p50/p99 {:5.1}/{:5.1} ms, setup p50 {:5.1}/{:5.1} ms, loadgen CPU {:5.1} %{}",
            row.streams,
            row.peers,
            row.connected,
            row.peers,
            row.server_cpu_pct,
            row.rss_mb,
            row.loss_pct,
            row.latency_p50_ms,
            row.latency_p99_ms,
            row.answer_p50_ms,
            row.connected_p50_ms,
            row.loadgen_cpu_pct,
            if row.valid { "" } else { " INVALID (loadgen core > 85 % busy)" }
        );
        let within = within(&row, options);
        rows.push(row);
        if !within {
            break;
        }
        target += options.step;
    }
    print_table(options, &rows);
    let csv = options
        .out_dir
        .join(format!("capacity-{}.csv", options.label));
    write_csv(&csv, options, &rows)?;
    println!("wrote {}", csv.display());
    let png = options
        .out_dir
        .join(format!("capacity-{}.png", options.label));
    match super::plot::plot(&png, &options.label, &rows) {
        Ok(()) => println!("wrote {}", png.display()),
        Err(err) => eprintln!("no plot: {err}"),
    }
    Ok(rows)
}

/// The most peers of a step within the limits.
pub fn capacity(rows: &[SweepRow], options: &SweepOptions) -> usize {
    rows.iter()
        .filter(|r| within(r, options))
        .map(|r| r.peers)
        .max()
        .unwrap_or(0)
}

/// The most forwarded streams of a step within the limits.
pub fn stream_capacity(rows: &[SweepRow], options: &SweepOptions) -> usize {
    rows.iter()
        .filter(|r| within(r, options))
        .map(|r| r.streams)
        .max()
        .unwrap_or(0)
}

fn step(
    options: &SweepOptions,
    server_bin: &Path,
    loadgen_bin: &Path,
    peers: usize,
) -> std::io::Result<SweepRow> {
    let mut server = None;
    let (pid, url) = match (options.external_pid, &options.server_url) {
        (Some(pid), Some(url)) => (pid, url.clone()),
        _ => {
            let child = start_server(options, server_bin, peers)?;
            let pid = child.id();
            server = Some(child);
            wait_listening(SocketAddr::new(options.server_ip, options.grpc_port))?;
            (
                pid,
                format!("http://{}:{}", options.server_ip, options.grpc_port),
            )
        }
    };
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = rss_mb(pid).unwrap_or(0.0);
    let mut loadgen = pinned(options.loadgen_core, loadgen_bin);
    loadgen
        .args(["--server", &url, "--protocol", options.protocol_name()])
        .args(["--peers", &peers.to_string()])
        .args(["--duration-s", &options.duration_s.to_string()])
        .args(["--ramp-per-s", &options.ramp_per_s.to_string()])
        .args(["--server-pid", &pid.to_string()])
        .args(["--ice-ip", &options.client_ip.to_string()])
        .args(
            options
                .rooms_of
                .map(|p| vec!["--rooms-of".to_owned(), p.to_string()])
                .unwrap_or_default(),
        )
        .arg("--json")
        .stderr(Stdio::inherit());
    let output = loadgen.output();
    if let Some(mut child) = server {
        let _ = child.kill();
        let _ = child.wait();
    }
    let output = output?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or(Value::Null);
    let f = |path: &[&str]| {
        path.iter()
            .fold(&report, |v, key| &v[*key])
            .as_f64()
            .unwrap_or(0.0)
    };
    let rss = f(&["server_rss_mb"]);
    Ok(SweepRow {
        peers,
        streams: options.streams_of(peers),
        connected: f(&["peers_connected"]) as usize,
        server_cpu_pct: f(&["server_cpu_pct"]),
        rss_mb: rss,
        mb_per_peer: if peers > 0 {
            (rss - idle_rss) / peers as f64
        } else {
            0.0
        },
        loss_pct: f(&["loss_pct"]),
        latency_p50_ms: f(&["latency_ms", "p50"]),
        latency_p99_ms: f(&["latency_ms", "p99"]),
        answer_p50_ms: f(&["answer_ms", "p50"]),
        connected_p50_ms: f(&["connected_ms", "p50"]),
        loadgen_cpu_pct: f(&["loadgen_cpu_pct"]),
        valid: report["valid"].as_bool().unwrap_or(false),
    })
}

impl SweepOptions {
    fn protocol_name(&self) -> &'static str {
        self.protocol.name()
    }

    /// Peers of the step nearest to `streams` forwarded streams (whole rooms, at least one).
    fn peers_for(&self, streams: usize) -> usize {
        match self.rooms_of {
            Some(p) if p >= 2 => {
                let per_room = p * (p - 1);
                let rooms = ((streams + per_room / 2) / per_room).max(1);
                rooms * p
            }
            _ => streams,
        }
    }

    /// The streams `peers` make the server forward.
    fn streams_of(&self, peers: usize) -> usize {
        match self.rooms_of {
            Some(p) if p >= 2 => peers * (p - 1),
            _ => peers,
        }
    }
}

/// `taskset -c core program` when taskset exists, else `program`.
fn pinned(core: usize, program: &Path) -> Command {
    if Path::new("/usr/bin/taskset").exists() {
        let mut command = Command::new("/usr/bin/taskset");
        command.arg("-c").arg(core.to_string()).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn start_server(options: &SweepOptions, server_bin: &Path, peers: usize) -> std::io::Result<Child> {
    let mut command = match &options.netns {
        Some(netns) => {
            let mut command = Command::new("ip");
            command
                .args(["netns", "exec", netns, "taskset", "-c"])
                .arg(options.server_core.to_string())
                .arg(server_bin);
            command
        }
        None => pinned(options.server_core, server_bin),
    };
    let log = std::fs::File::create(
        options
            .out_dir
            .join(format!("server-{}-{peers}.log", options.label)),
    )?;
    command
        .args(["--mode", "grpc"])
        .arg("--grpc-address")
        .arg(format!("{}:{}", options.server_ip, options.grpc_port))
        .arg("--http-address")
        .arg(format!("{}:{}", options.server_ip, options.grpc_port + 1))
        .arg("--manifest")
        .arg(&options.manifest)
        .args(["--ice-ips", &options.server_ip.to_string()])
        .args(["--max-peers", "100000"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
}

fn wait_listening(address: SocketAddr) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(std::io::Error::other(format!(
        "the server did not listen on {address}"
    )))
}

fn print_table(options: &SweepOptions, rows: &[SweepRow]) {
    println!();
    println!(
        "{} ({}): {} peers within loss <= {} % and latency p99 <= {} ms ({} forwarded streams)",
        options.label,
        options.protocol_name(),
        capacity(rows, options),
        options.loss_limit,
        options.latency_limit_ms,
        stream_capacity(rows, options)
    );
    println!("| peers | streams | server CPU % | CPU %/1k streams | RSS MB | MB/peer | loss % | latency p50 ms | latency p99 ms | answer p50 ms | connected p50 ms | loadgen CPU % | valid |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.peers,
            r.streams,
            r.server_cpu_pct,
            r.cpu_per_1k_streams(),
            r.rss_mb,
            r.mb_per_peer,
            r.loss_pct,
            r.latency_p50_ms,
            r.latency_p99_ms,
            r.answer_p50_ms,
            r.connected_p50_ms,
            r.loadgen_cpu_pct,
            if r.valid { "yes" } else { "no" }
        );
    }
}

fn write_csv(path: &Path, options: &SweepOptions, rows: &[SweepRow]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    writeln!(file, "peers,streams,connected,server_cpu_pct,cpu_pct_per_1k_streams,rss_mb,mb_per_peer,loss_pct,latency_p50_ms,latency_p99_ms,answer_p50_ms,connected_p50_ms,loadgen_cpu_pct,valid,note")?;
    for r in rows {
        writeln!(
            file,
            "{},{},{},{:.1},{:.2},{:.1},{:.3},{:.3},{:.1},{:.1},{:.2},{:.2},{:.1},{},{}",
            r.peers,
            r.streams,
            r.connected,
            r.server_cpu_pct,
            r.cpu_per_1k_streams(),
            r.rss_mb,
            r.mb_per_peer,
            r.loss_pct,
            r.latency_p50_ms,
            r.latency_p99_ms,
            r.answer_p50_ms,
            r.connected_p50_ms,
            r.loadgen_cpu_pct,
            r.valid,
            options.note.replace(',', ";")
        )?;
    }
    Ok(())
}
