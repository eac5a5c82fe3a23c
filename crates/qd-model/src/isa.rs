//! Which instruction-set level the packed kernels (`q8_0_vnni`, `kquant_vnni`, their activation
//! quantizers) run at: the one CPU-feature probe they share. Every level computes the same
//! integer sums and the same f32 operations in the same order, so a product's result does not
//! depend on the level (the kernels' tests compare each level with the scalar one bit for bit).
//!
//! `QAT_DISTILL_ISA=scalar|avx512` (or the CLI's `--isa`) lowers the level below what the CPU
//! has, for tests and benchmarks; it never raises it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// A kernel level, ordered from the most portable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust over the packed tiles: any CPU; the oracle the others are tested against.
    Scalar,
    /// AVX-512 F/BW/VNNI and FMA (Intel since Ice Lake, AMD since Zen 4).
    Avx512Vnni,
}

/// The environment variable that lowers the level.
pub const ISA_ENV: &str = "QAT_DISTILL_ISA";

/// A level name that is not one of [`Isa::ALL`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown instruction-set level {0:?} (levels: scalar, avx512)")]
pub struct UnknownIsa(pub String);

/// `u8::MAX`: no limit set by [`Isa::limit_to`].
static LIMIT: AtomicU8 = AtomicU8::new(u8::MAX);

impl Isa {
    /// Every level, most portable first.
    pub const ALL: [Isa; 2] = [Isa::Scalar, Isa::Avx512Vnni];

    /// The name `QAT_DISTILL_ISA` and `--isa` take, and `bench` reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx512Vnni => "avx512",
        }
    }

    pub fn parse(s: &str) -> Result<Isa, UnknownIsa> {
        Isa::ALL
            .into_iter()
            .find(|l| l.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| UnknownIsa(s.to_string()))
    }

    /// The best level this CPU runs (probed once).
    pub fn detected() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("fma")
            {
                return Isa::Avx512Vnni;
            }
            Isa::Scalar
        })
    }

    /// Whether this CPU runs `self`.
    pub fn runs_here(self) -> bool {
        self <= Isa::detected()
    }

    /// The levels this CPU runs, most portable first (tests run each).
    pub fn supported() -> impl Iterator<Item = Isa> {
        Isa::ALL.into_iter().filter(|l| l.runs_here())
    }

    /// The level `QAT_DISTILL_ISA` asks for; `Ok(None)` when it is unset or empty.
    pub fn from_env() -> Result<Option<Isa>, UnknownIsa> {
        match std::env::var(ISA_ENV) {
            Ok(v) if !v.trim().is_empty() => Isa::parse(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// Caps the level for the rest of the process (the CLI's `--isa`).
    pub fn limit_to(level: Isa) {
        LIMIT.store(level as u8, Ordering::Relaxed);
    }

    /// `QAT_DISTILL_ISA`'s level, read once (an unknown value counts as unset here; the CLI
    /// refuses it with [`Isa::from_env`] before anything runs).
    fn env_level() -> Option<Isa> {
        static ENV: OnceLock<Option<Isa>> = OnceLock::new();
        *ENV.get_or_init(|| Isa::from_env().ok().flatten())
    }

    /// Whether a level was asked for ([`Isa::limit_to`] or `QAT_DISTILL_ISA`), rather than
    /// detected.
    pub fn forced() -> bool {
        LIMIT.load(Ordering::Relaxed) != u8::MAX || Isa::env_level().is_some()
    }

    /// The level packed kernels made now run at: the detected one, lowered by
    /// [`Isa::limit_to`] and `QAT_DISTILL_ISA`.
    pub fn active() -> Isa {
        let mut level = Isa::detected();
        if let Some(e) = Isa::env_level() {
            level = level.min(e);
        }
        let limit = LIMIT.load(Ordering::Relaxed);
        if let Some(&l) = Isa::ALL.iter().find(|l| **l as u8 == limit) {
            level = level.min(l);
        }
        level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for l in Isa::ALL {
            assert_eq!(Isa::parse(l.name()), Ok(l));
        }
        assert_eq!(Isa::parse(" AVX512 "), Ok(Isa::Avx512Vnni));
        let e = Isa::parse("avx3").unwrap_err();
        assert!(e.to_string().contains("scalar, avx512"), "{e}");
        assert!(Isa::Scalar.runs_here());
        assert_eq!(Isa::supported().next(), Some(Isa::Scalar));
        assert!(Isa::active() <= Isa::detected());
    }
}
