//! The memory budget of a job when `--max-mem` is not given.
//!
//! Half of the memory this process could use now: the kernel's `MemAvailable`, or what the
//! cgroup (container, SLURM job) still allows if that is less. Half, so the page cache, which
//! the reads and writes of a job lean on, and the other programs of the machine keep the rest.
//! The value is rounded down to a multiple of 64 MB so that two runs a moment apart plan the
//! same job with the same budget; a `--resume` without `--max-mem` takes the budget of the plan
//! it resumes instead (see `resolve::budget`), so a machine whose free memory changed in
//! between still resumes the same plan.

use std::path::Path;

/// The granularity of a default budget.
const STEP: u64 = 64_000_000;

/// The smallest default budget: below it the planner would refuse most jobs anyway, and the
/// message about `--max-mem` says more than a budget of a few megabytes would.
const FLOOR: u64 = 256_000_000;

/// Half of the memory available to this process, rounded down to 64 MB, at least 256 MB; None
/// when the system does not say (not Linux).
pub fn default_max_mem() -> Option<u64> {
    let available = mem_available(Path::new("/proc/meminfo"))?;
    let limited = match cgroup_headroom() {
        Some(room) => available.min(room),
        None => available,
    };
    Some(((limited / 2) / STEP * STEP).max(FLOOR))
}

/// `MemAvailable` of a meminfo file, in bytes.
fn mem_available(meminfo: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(meminfo).ok()?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(value * 1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// What the cgroup of this process still allows (limit minus usage), v2 or v1; None without a
/// limit.
fn cgroup_headroom() -> Option<u64> {
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // v2: one line `0::/path`.
    if let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) {
        let dir = format!("/sys/fs/cgroup{}", path.trim_end_matches('/'));
        if let Some(limit) = read(&format!("{dir}/memory.max")) {
            let used = read(&format!("{dir}/memory.current")).unwrap_or(0);
            return Some(limit.saturating_sub(used));
        }
        return None;
    }
    // v1: a limit near u64::MAX means none.
    let limit = read("/sys/fs/cgroup/memory/memory.limit_in_bytes")?;
    if limit >= 1 << 60 {
        return None;
    }
    let used = read("/sys/fs/cgroup/memory/memory.usage_in_bytes").unwrap_or(0);
    Some(limit.saturating_sub(used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_read_in_kilobytes() {
        let text = "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(parse_meminfo(text), Some(8_000_000 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_meminfo("MemAvailable: x kB\n"), None);
    }

    #[test]
    fn default_is_half_rounded_and_floored() {
        // On the machine running the test: whatever it has, the rules hold.
        if let Some(budget) = default_max_mem() {
            assert_eq!(budget % STEP, 0);
            assert!(budget >= FLOOR);
            let available = mem_available(Path::new("/proc/meminfo")).unwrap_or(u64::MAX);
            assert!(budget <= (available / 2).max(FLOOR));
        }
    }
}
