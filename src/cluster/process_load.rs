//! CPU use of a process from `/proc/<pid>/stat`, for worker heartbeats (and load reports).

use std::time::Instant;

/// Clock ticks per second of `/proc` times (USER_HZ, 100 on every Linux ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// Measures a process's CPU time between two readings.
#[derive(Debug)]
pub struct CpuMeter {
    stat_path: String,
    last: Option<(Instant, u64)>,
    cores: f64,
}

impl CpuMeter {
    /// A meter of this process.
    pub fn for_self() -> Self {
        Self::for_path("/proc/self/stat".into())
    }

    /// A meter of process `pid`.
    pub fn for_pid(pid: u32) -> Self {
        Self::for_path(format!("/proc/{pid}/stat"))
    }

    fn for_path(stat_path: String) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let mut meter = Self {
            stat_path,
            last: None,
            cores,
        };
        meter.last = meter.read_ticks().map(|ticks| (Instant::now(), ticks));
        meter
    }

    /// CPU time used since the last call, over wall time: 1.0 is one core fully busy.
    /// `None` where `/proc` cannot be read.
    pub fn cores_busy(&mut self) -> Option<f64> {
        let ticks = self.read_ticks()?;
        let now = Instant::now();
        let previous = self.last.replace((now, ticks));
        let (then, before) = previous?;
        let wall = now.duration_since(then).as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        Some(ticks.saturating_sub(before) as f64 / TICKS_PER_SECOND / wall)
    }

    /// [`CpuMeter::cores_busy`] divided by the cores of this machine (0.0..=1.0).
    pub fn machine_share(&mut self) -> Option<f64> {
        let cores = self.cores;
        self.cores_busy().map(|busy| (busy / cores).min(1.0))
    }

    /// utime + stime of the process, in ticks.
    fn read_ticks(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(&self.stat_path).ok()?;
        parse_cpu_ticks(&stat)
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field
/// 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ticks_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(175));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn a_busy_loop_shows_as_cpu_use() {
        let mut meter = CpuMeter::for_self();
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let busy = meter.cores_busy().unwrap();
        assert!(busy > 0.3, "a 300 ms busy loop measured as {busy} cores");
        assert!(resident_bytes(std::process::id()).unwrap() > 1024 * 1024);
    }
}
