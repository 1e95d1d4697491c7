//! What the machine was doing: CPU time of processes (`/proc/PID/stat`), the whole machine's busy
//! time (`/proc/stat`), the load average, and a description of the machine for reports.

use std::time::Duration;

use serde_json::{Value, json};

/// Clock ticks per second of `/proc` CPU counters (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// CPU time (user + system, all threads) of a process; `None` for this process.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    let (utime, stime) = stat_times(&stat)?;
    Some(ticks(utime + stime))
}

/// utime and stime (fields 14 and 15) of a `/proc/PID/stat` line; the command name in
/// parentheses may hold spaces, so fields are counted from its closing parenthesis.
fn stat_times(stat: &str) -> Option<(u64, u64)> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime = fields.next()?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

fn ticks(t: u64) -> Duration {
    Duration::from_millis(t * 1000 / TICKS_PER_SECOND)
}

/// CPU time of every process whose command name is `postgres` (the server and its backends),
/// at most 4,096 processes looked at.
pub fn postgres_cpu_time() -> Option<Duration> {
    let mut total = 0u64;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten().take(4096) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let comm = stat
            .find('(')
            .zip(stat.rfind(')'))
            .and_then(|(a, b)| stat.get(a + 1..b));
        if comm != Some("postgres") {
            continue;
        }
        if let Some((u, s)) = stat_times(&stat) {
            total += u + s;
            found = true;
        }
    }
    found.then(|| ticks(total))
}

/// The whole machine's CPU counters: (busy, total) ticks summed over all CPUs.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is counted in user already).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// CPU use between two points, in cores (1.0 = one CPU busy all the time).
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    server_pid: u32,
    server: Option<Duration>,
    me: Option<Duration>,
    postgres: Option<Duration>,
    machine: Option<(u64, u64)>,
    at: std::time::Instant,
}

/// What a [`CpuMark`] measured until now.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    pub seconds: f64,
    /// `muster serve`, in cores.
    pub server_cores: Option<f64>,
    /// This load generator, in cores.
    pub loadgen_cores: Option<f64>,
    /// Every `postgres` process, in cores.
    pub postgres_cores: Option<f64>,
    /// The whole machine (every process, other engineers' too), in cores.
    pub machine_cores: Option<f64>,
}

impl CpuMark {
    pub fn now(server_pid: u32) -> CpuMark {
        CpuMark {
            server_pid,
            server: cpu_time(Some(server_pid)),
            me: cpu_time(None),
            postgres: postgres_cpu_time(),
            machine: machine_ticks(),
            at: std::time::Instant::now(),
        }
    }

    pub fn since(&self) -> CpuUse {
        let later = CpuMark::now(self.server_pid);
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let cores = |a: Option<Duration>, b: Option<Duration>| {
            a.zip(b)
                .map(|(a, b)| b.saturating_sub(a).as_secs_f64() / secs)
        };
        CpuUse {
            seconds: secs,
            server_cores: cores(self.server, later.server),
            loadgen_cores: cores(self.me, later.me),
            postgres_cores: cores(self.postgres, later.postgres),
            machine_cores: self.machine.zip(later.machine).map(|((b0, _), (b1, _))| {
                b1.saturating_sub(b0) as f64 / TICKS_PER_SECOND as f64 / secs
            }),
        }
    }
}

impl CpuUse {
    pub fn to_json(self) -> Value {
        json!({
            "seconds": self.seconds,
            "server_cores": self.server_cores,
            "loadgen_cores": self.loadgen_cores,
            "postgres_cores": self.postgres_cores,
            "machine_cores": self.machine_cores,
        })
    }
}

/// nproc, memory, CPU model and kernel, for the report's header.
pub fn machine() -> Value {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: Option<u64> = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string());
    json!({
        "cpus": cpus(),
        "memory_mib": mem_kib.map(|k| k / 1024),
        "cpu_model": model,
        "kernel": kernel,
    })
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_name_with_spaces() {
        let line = "42 (a b) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0";
        assert_eq!(stat_times(line), Some((250, 30)));
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_time(None).is_some());
    }
}
