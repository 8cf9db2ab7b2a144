//! What Linux's `/proc` says about another process: its CPU time so far and its resident
//! memory, so a benchmark can charge a server process for exactly the work it did.

use std::time::Duration;

/// User and kernel CPU time of process `pid` so far (all its threads).
pub fn cpu_of(pid: u32) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks = |i: usize| fields[i].parse::<u64>().unwrap();
    // The clock tick Linux reports these in (USER_HZ) is 100 Hz.
    let tick = Duration::from_millis(10);
    (tick * ticks(11) as u32, tick * ticks(12) as u32)
}

/// Resident memory of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib / 1024.0
}
