//! The decoder's threads: one hand-off per token instead of one per op.
//!
//! A token runs as one program on every thread of the pool (`rayon::broadcast`). Serial steps
//! (norms, RoPE, attention over one query) run on thread 0 while the others wait at a barrier;
//! products are shared by claiming chunks of row tiles from an atomic counter, so a thread
//! slowed by the machine's other work takes fewer. The barrier spins briefly and then yields,
//! so that more threads than cores, or a busy machine, do not turn into threads spinning
//! against each other.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Spins before yielding: a wait on a product's last chunk is a few microseconds.
const SPINS: u32 = 1 << 12;

pub(crate) struct Team {
    n: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    next: AtomicUsize,
    /// Set when a thread panics, so the others stop waiting for it.
    poisoned: AtomicBool,
}

/// Marks the team poisoned if its thread unwinds.
struct PanicGuard<'a>(&'a Team);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned.store(true, Ordering::Release);
        }
    }
}

impl Team {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            n: n.max(1),
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    pub(crate) fn threads(&self) -> usize {
        self.n
    }

    /// Runs `f(thread)` on all `n` threads of the current rayon pool and waits for them; `n`
    /// must be that pool's size (one thread runs it inline; `Decoder::step` checks).
    pub(crate) fn run(&self, f: impl Fn(usize) + Sync) {
        self.next.store(0, Ordering::Relaxed);
        if self.n == 1 {
            f(0);
            return;
        }
        debug_assert_eq!(self.n, rayon::current_num_threads());
        rayon::broadcast(|ctx| {
            let _guard = PanicGuard(self);
            f(ctx.index())
        });
    }

    /// Waits until all threads arrive; the last one's arrival releases the others, and what
    /// each wrote before is visible to all after.
    pub(crate) fn barrier(&self) {
        if self.n == 1 {
            return;
        }
        let gen = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0;
        while self.generation.load(Ordering::Acquire) == gen {
            if self.poisoned.load(Ordering::Acquire) {
                return;
            }
            if spins < SPINS {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// `f` on thread 0, then a barrier.
    pub(crate) fn serial(&self, thread: usize, f: impl FnOnce()) {
        if thread == 0 {
            f();
            self.next.store(0, Ordering::Relaxed);
        }
        self.barrier();
    }

    /// Every thread claims chunks `0..chunks` until none is left and runs `f(chunk)` on each;
    /// then a barrier. Must follow a [`Team::serial`] (which resets the counter).
    pub(crate) fn share(&self, chunks: usize, f: impl Fn(usize)) {
        loop {
            if self.poisoned.load(Ordering::Relaxed) {
                break;
            }
            let c = self.next.fetch_add(1, Ordering::Relaxed);
            if c >= chunks {
                break;
            }
            f(c);
        }
        self.barrier();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunk runs exactly once and serial steps see all writes of the shared step before
    /// them, over many rounds (a lost or repeated chunk, or a barrier that lets a thread
    /// through early, shows up as a wrong count).
    #[test]
    fn chunks_run_once_and_barriers_order_the_steps() {
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let team = Team::new(threads);
                let hits: Vec<AtomicUsize> = (0..97).map(|_| AtomicUsize::new(0)).collect();
                let total = AtomicUsize::new(0);
                team.run(|t| {
                    for round in 0..200 {
                        team.serial(t, || {
                            let sum: usize = hits.iter().map(|h| h.load(Ordering::Relaxed)).sum();
                            assert_eq!(sum, 97 * round, "{threads} threads, round {round}");
                            total.fetch_add(1, Ordering::Relaxed);
                        });
                        team.share(97, |c| {
                            hits[c].fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
                assert_eq!(total.load(Ordering::Relaxed), 200);
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 200));
            });
        }
    }
}
