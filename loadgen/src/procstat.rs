//! CPU and memory of a process (and of one CPU core) from `/proc`, sampled at two instants.

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` and `/proc/stat` (USER_HZ: 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A process's CPU time at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: Instant,
    ticks: u64,
}

impl CpuSample {
    /// The CPU time (user + system) `pid` has used so far; `None` if it is gone.
    pub fn of(pid: u32) -> Option<Self> {
        Self::read(&format!("/proc/{pid}/stat"))
    }

    /// This process's CPU time so far.
    pub fn own() -> Option<Self> {
        Self::read("/proc/self/stat")
    }

    fn read(path: &str) -> Option<Self> {
        let stat = std::fs::read_to_string(path).ok()?;
        // The command name may hold spaces: fields are counted after its closing parenthesis.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(Self {
            at: Instant::now(),
            ticks: utime + stime,
        })
    }

    /// Percent of one core used between `self` and the later `until`.
    pub fn percent_until(&self, until: &Self) -> f64 {
        let wall = until.at.duration_since(self.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        until.ticks.saturating_sub(self.ticks) as f64 / TICKS_PER_SECOND / wall * 100.0
    }
}

/// Busy and total time of one core (`cpuN` line of `/proc/stat`).
#[derive(Debug, Clone, Copy)]
pub struct CoreSample {
    busy: u64,
    total: u64,
}

impl CoreSample {
    /// Core `core`'s counters so far.
    pub fn of(core: usize) -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let prefix = format!("cpu{core} ");
        let line = stat.lines().find(|l| l.starts_with(&prefix))?;
        let values: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let total: u64 = values.iter().take(8).sum();
        // idle and iowait.
        let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
        Some(Self {
            busy: total.saturating_sub(idle),
            total,
        })
    }

    /// Percent of the core busy (anyone's work) between `self` and `until`.
    pub fn percent_until(&self, until: &Self) -> f64 {
        let total = until.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        until.busy.saturating_sub(self.busy) as f64 / total as f64 * 100.0
    }
}

/// Resident memory of `pid` in MiB (`VmRSS`); `None` if it is gone.
pub fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The one core this process may run on (`taskset -c N`), if it is pinned to exactly one.
pub fn pinned_core() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    list.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_figures_are_readable() {
        let before = CpuSample::own().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let after = CpuSample::own().unwrap();
        assert!(before.percent_until(&after) >= 0.0);
        assert!(rss_mb(std::process::id()).unwrap() > 0.0);
        assert!(CoreSample::of(0).is_some());
    }
}
