//! The process's memory as training sees it: the peak resident set every summary reports, and
//! a phase-by-phase trace (`QAT_DISTILL_MEM_TRACE=1`: one stderr line per phase with the
//! resident set now and its peak so far) for finding where a run's bytes go.

use std::sync::OnceLock;

static KEEP_FREED_PAGES: OnceLock<fn(bool)> = OnceLock::new();

/// Registers how to tell the allocator to keep freed pages for reuse (`true`: the binary's
/// default, which spares clearing fresh pages on every reuse) or to hand them back to the
/// system (`false`).
pub fn set_page_policy(f: fn(bool)) {
    let _ = KEEP_FREED_PAGES.set(f);
}

/// Whether the allocator keeps freed pages from now on. A run hands them back while it loads
/// (building a student leaves its temporaries' pages behind: 0.8 GB on the TinyLlama-1.1B
/// shape) and keeps them once it knows its step is far from the memory there is. Kept pages
/// are not all reused by later buffers of other sizes: on the LLaMA-2-7B → TinyLlama-1.1B
/// pairing they took the peak from 18.6 GB to more than 21.4 GB (killed by the kernel at its
/// first optimizer step on a 24 GB machine).
pub fn keep_freed_pages(keep: bool) {
    if let Some(f) = KEEP_FREED_PAGES.get() {
        f(keep);
    }
}

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

/// Memory the system can still give this process: MemAvailable, or what is left of
/// `QAT_DISTILL_MEM_LIMIT` (bytes: a budget smaller than the machine, e.g. a laptop's, to check a
/// run against), `None` where neither is known.
pub fn available_bytes() -> Option<u64> {
    if let Some(limit) = std::env::var("QAT_DISTILL_MEM_LIMIT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Some(limit.saturating_sub(rss_bytes()));
    }
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = s
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// What a training step will add to the memory a run holds once its teacher and student are
/// loaded, from the shapes: gradients and moments per trained parameter, the activations
/// autograd keeps (every block's, with the fake-quantized weights, or one block's when blocks
/// are recomputed) and the loss's logits chunks. Coefficients are counts of tensors the
/// composed ops keep per block, calibrated on the Qwen2.5-0.5B shape at 512 tokens (within
/// 15 % of the measured peak; the figure is given as "about").
#[derive(Debug, Clone, Copy)]
pub struct StepEstimate {
    pub trained_params: usize,
    pub moment_bytes: f64,
    /// Bytes per trained parameter of the gradients held at once: 4 (f32), 2 (bf16), 0 when
    /// each block is updated in backward (`update_in_backward`: one block's, in `block`).
    pub gradient_bytes: f64,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub vocab: usize,
    pub seq_len: usize,
    pub chunk: usize,
    pub recompute: bool,
    pub qat: bool,
}

impl StepEstimate {
    pub fn bytes(&self) -> u64 {
        let p = self.trained_params as f64;
        let s = self.seq_len as f64;
        let block = 4.0
            * (12.0 * s * self.n_embd as f64
                + 6.0 * s * self.n_ff as f64
                + 6.0 * self.n_head as f64 * s * s);
        let (acts, weights_q) = if self.recompute {
            (
                block + 4.0 * s * self.n_embd as f64 * self.n_layer as f64,
                0.0,
            )
        } else {
            (
                block * self.n_layer as f64,
                if self.qat { 4.0 * p } else { 0.0 },
            )
        };
        let logits = 4.0 * 4.0 * self.chunk.min(self.seq_len) as f64 * self.vocab as f64;
        (p * (self.gradient_bytes + self.moment_bytes) + weights_q + acts + logits) as u64
    }
}
