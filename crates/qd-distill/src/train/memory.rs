//! The process's memory as training sees it: the peak resident set every summary reports, and
//! a phase-by-phase trace (`QAT_DISTILL_MEM_TRACE=1`: one stderr line per phase with the
//! resident set now and its peak so far) for finding where a run's bytes go.

use std::sync::OnceLock;

fn status_kb(key: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
}

/// The process's peak resident set (VmHWM) in bytes, 0 where /proc is not available.
pub fn peak_rss_bytes() -> u64 {
    status_kb("VmHWM:").map_or(0, |kb| kb * 1024)
}

/// The process's resident set now (VmRSS) in bytes, 0 where /proc is not available.
pub fn rss_bytes() -> u64 {
    status_kb("VmRSS:").map_or(0, |kb| kb * 1024)
}

fn tracing() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("QAT_DISTILL_MEM_TRACE").is_some_and(|v| v != "0"))
}

/// With `QAT_DISTILL_MEM_TRACE` set, prints `mem: PHASE rss X MB peak Y MB` to stderr.
pub fn mark(phase: &str) {
    if tracing() {
        eprintln!(
            "mem: {phase:<28} rss {:>7.0} MB  peak {:>7.0} MB",
            rss_bytes() as f64 / 1e6,
            peak_rss_bytes() as f64 / 1e6
        );
    }
}
