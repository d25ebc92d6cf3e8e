//! One step of the capacity sweep: what `sweep` measures and `plot` draws (its own module,
//! so neither of the two imports the other).

/// One step of the sweep.
#[derive(Debug, Clone, Default)]
pub struct SweepRow {
    pub peers: usize,
    /// Streams the server forwards: one per echo peer, P·(P−1) per room of P.
    pub streams: usize,
    pub connected: usize,
    pub server_cpu_pct: f64,
    pub rss_mb: f64,
    /// (RSS - the idle server's RSS) / peers.
    pub mb_per_peer: f64,
    pub loss_pct: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub answer_p50_ms: f64,
    pub connected_p50_ms: f64,
    pub loadgen_cpu_pct: f64,
    pub valid: bool,
}

impl SweepRow {
    /// Server CPU (percent of one core) per 1,000 forwarded streams.
    pub fn cpu_per_1k_streams(&self) -> f64 {
        if self.streams == 0 {
            return 0.0;
        }
        self.server_cpu_pct / self.streams as f64 * 1000.0
    }
}

/// The rows of a CSV `sweep` wrote (columns found by name; rows that do not parse skipped).
pub fn read_csv(text: &str) -> Vec<SweepRow> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let names: Vec<&str> = header.split(',').collect();
    let column = |name: &str| names.iter().position(|n| *n == name);
    let (peers, streams, connected) = (column("peers"), column("streams"), column("connected"));
    let (cpu, loss) = (column("server_cpu_pct"), column("loss_pct"));
    let (p50, p99) = (column("latency_p50_ms"), column("latency_p99_ms"));
    let (loadgen, valid) = (column("loadgen_cpu_pct"), column("valid"));
    lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let num = |i: Option<usize>| -> Option<f64> { fields.get(i?)?.parse().ok() };
            let peers = num(peers)? as usize;
            Some(SweepRow {
                peers,
                streams: num(streams).map_or(peers, |s| s as usize),
                connected: num(connected)? as usize,
                server_cpu_pct: num(cpu)?,
                loss_pct: num(loss)?,
                latency_p50_ms: num(p50)?,
                latency_p99_ms: num(p99)?,
                loadgen_cpu_pct: num(loadgen).unwrap_or(0.0),
                valid: valid
                    .and_then(|i| fields.get(i))
                    .is_some_and(|v| *v == "true"),
                ..SweepRow::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_csv_reads_back() {
        let csv = "peers,streams,connected,server_cpu_pct,cpu_pct_per_1k_streams,rss_mb,mb_per_peer,loss_pct,latency_p50_ms,latency_p99_ms,answer_p50_ms,connected_p50_ms,loadgen_cpu_pct,valid,note\n\
                   90,360,90,12.5,34.72,40.0,0.100,0.010,1.2,4.5,1.00,3.00,40.0,true,\n";
        let rows = read_csv(csv);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.peers, r.streams, r.connected, r.valid),
            (90, 360, 90, true)
        );
        assert_eq!((r.server_cpu_pct, r.latency_p99_ms), (12.5, 4.5));
        assert!((r.cpu_per_1k_streams() - 34.72).abs() < 0.01);
    }
}
