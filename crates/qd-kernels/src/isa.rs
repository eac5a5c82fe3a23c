//! Which instruction-set level the SIMD kernels run at: the one CPU-feature probe of the
//! workspace, shared by the packed kernels (`packed::q8_0`, `packed::kquant`, their activation
//! quantizers) and the fake-quants (`fake`). Every level computes the same integer sums and the
//! same f32 operations in the same order, so a result does not depend on the level (the
//! kernels' tests compare each level with the scalar one bit for bit).
//!
//! `QAT_DISTILL_ISA=scalar|neon|neondot|avx2|avxvnni|avx512` (or the CLI's `--isa`) lowers the level below
//! what the CPU has, for tests and benchmarks; it never raises it. The levels are ordered but not
//! nested: AMD's Zen 4 has AVX-512 VNNI and no AVX-VNNI, so each level is probed on its own and
//! a cap picks the best level at or below it that the CPU runs.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// A kernel level, ordered from the most portable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust over the packed tiles: any CPU; the oracle the others are tested against.
    Scalar,
    /// aarch64 Advanced SIMD (every 64-bit Arm core): `smull` + `sadalp`.
    Neon,
    /// NEON with the dot-product extension's `sdot` (Raspberry Pi 5, Jetson Orin, Apple
    /// Silicon, Snapdragon X).
    NeonDot,
    /// AVX2, FMA and F16C (Intel since Haswell, AMD since Zen 1): `vpmaddubsw` + `vpmaddwd`.
    Avx2,
    /// AVX2 with AVX-VNNI's 256-bit `vpdpbusd` (Intel since Alder Lake and Sapphire Rapids, AMD
    /// since Zen 5).
    AvxVnni,
    /// AVX-512 F/BW/DQ/VNNI, FMA and F16C (Intel since Ice Lake, AMD since Zen 4).
    Avx512Vnni,
}

/// The environment variable that lowers the level.
pub const ISA_ENV: &str = "QAT_DISTILL_ISA";

/// A level name that is not one of [`Isa::ALL`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown instruction-set level {0:?} (levels: scalar, neon, neondot, avx2, avxvnni, avx512)"
)]
pub struct UnknownIsa(pub String);

/// `u8::MAX`: no limit set by [`Isa::limit_to`].
static LIMIT: AtomicU8 = AtomicU8::new(u8::MAX);

impl Isa {
    /// Every level, most portable first.
    pub const ALL: [Isa; 6] = [
        Isa::Scalar,
        Isa::Neon,
        Isa::NeonDot,
        Isa::Avx2,
        Isa::AvxVnni,
        Isa::Avx512Vnni,
    ];

    /// The name `QAT_DISTILL_ISA` and `--isa` take, and `bench` reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Neon => "neon",
            Isa::NeonDot => "neondot",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512Vnni => "avx512",
        }
    }

    pub fn parse(s: &str) -> Result<Isa, UnknownIsa> {
        Isa::ALL
            .into_iter()
            .find(|l| l.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| UnknownIsa(s.to_string()))
    }

    /// The best level this CPU runs.
    pub fn detected() -> Isa {
        Isa::best_up_to(Isa::Avx512Vnni)
    }

    /// Whether the CPU has every feature this level's kernels use.
    fn probe(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            match self {
                Isa::Scalar => true,
                Isa::Neon | Isa::NeonDot => false,
                Isa::Avx2 => avx2,
                Isa::AvxVnni => avx2 && is_x86_feature_detected!("avxvnni"),
                Isa::Avx512Vnni => {
                    is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512dq")
                        && is_x86_feature_detected!("f16c")
                        && is_x86_feature_detected!("avx512vnni")
                        && is_x86_feature_detected!("fma")
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            let neon = std::arch::is_aarch64_feature_detected!("neon");
            match self {
                Isa::Scalar => true,
                Isa::Neon => neon,
                Isa::NeonDot => neon && std::arch::is_aarch64_feature_detected!("dotprod"),
                _ => false,
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            self == Isa::Scalar
        }
    }

    /// Whether this CPU runs `self` (probed once per level).
    pub fn runs_here(self) -> bool {
        static RUNS: OnceLock<[bool; Isa::ALL.len()]> = OnceLock::new();
        RUNS.get_or_init(|| Isa::ALL.map(Isa::probe))[self as usize]
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

    /// The level packed kernels made now run at: the best one this CPU runs at or below
    /// [`Isa::cap`].
    pub fn active() -> Isa {
        Isa::best_up_to(Isa::cap())
    }

    /// The highest level asked for: [`Isa::limit_to`]'s and `QAT_DISTILL_ISA`'s, the top one
    /// when neither is set.
    pub fn cap() -> Isa {
        let mut cap = Isa::Avx512Vnni;
        if let Some(e) = Isa::env_level() {
            cap = cap.min(e);
        }
        let limit = LIMIT.load(Ordering::Relaxed);
        if let Some(&l) = Isa::ALL.iter().find(|l| **l as u8 == limit) {
            cap = cap.min(l);
        }
        cap
    }

    /// The best level this CPU runs at or below `cap`.
    pub fn best_up_to(cap: Isa) -> Isa {
        Isa::supported()
            .filter(|l| *l <= cap)
            .last()
            .unwrap_or(Isa::Scalar)
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
        assert!(e.to_string().contains("scalar, neon, neondot, avx2"), "{e}");
        assert!(Isa::Scalar.runs_here());
        assert_eq!(Isa::supported().next(), Some(Isa::Scalar));
        assert!(Isa::active() <= Isa::detected());
        assert!(Isa::detected().runs_here());
        for cap in Isa::ALL {
            let l = Isa::best_up_to(cap);
            assert!(l <= cap && l.runs_here(), "{cap:?} → {l:?}");
        }
    }
}
