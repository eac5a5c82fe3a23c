//! The decoder allocates nothing per token: a counting allocator around a run of steps.
//! (Its own test binary: the allocator is global to the process.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::Device;
use qd_fixtures::tiny::{tiny_gguf, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `GlobalAlloc::alloc`'s contract, passed on unchanged.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System` with layout `l` (every allocation here does).
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`, and `realloc`'s size contract passed on unchanged.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations during `steps` tokens after a first one, with `threads` threads.
fn allocations(isa: qd_model::Isa, threads: usize, steps: usize) -> usize {
    let spec = TinySpec::new(Family::Gemma3, GgmlType::Q8_0);
    let f = GgufFile::from_bytes("tiny.gguf", tiny_gguf(&spec)).unwrap();
    let model = qd_model::load_quantized(&f, &Device::Cpu).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut d = qd_model::Decoder::new_at(isa, &model, steps + 1)
            .unwrap()
            .unwrap();
        d.step(1).unwrap();
        let before = ALLOCS.load(Ordering::Relaxed);
        for t in 0..steps as u32 {
            std::hint::black_box(d.step(t % 200 + 2).unwrap());
        }
        ALLOCS.load(Ordering::Relaxed) - before
    })
}

#[test]
fn no_allocation_per_token() {
    for isa in qd_model::Isa::supported() {
        // One thread: none at all (past the window of 8, so the rings have wrapped).
        assert_eq!(allocations(isa, 1, 20), 0, "{isa:?}");
        // Two: only what rayon's broadcast makes to hand the token to the pool (measured: one).
        let two = allocations(isa, 2, 20);
        eprintln!("{isa:?}, 2 threads: {two} allocations over 20 tokens");
        assert!(two <= 2 * 20, "{isa:?}: {two} allocations over 20 tokens");
    }
}
