//! Every fake-quant level this CPU runs against the scalar oracle, bit for bit, on inputs that
//! stress the selects (ties for the largest magnitude, signed zeros, subnormal and overflowing
//! ranges, flat and all-positive sub-blocks, data already on a grid). qd-quant's tests compare
//! the oracle (and every level) with its port of ggml's quantizers; arm-check runs these under
//! qemu for the NEON level.

use super::*;

fn xorshift(seed: u64) -> impl FnMut() -> f32 {
    let mut s = seed;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// `blocks` blocks of 32, each of one of nine kinds.
fn adversarial(blocks: usize, seed: u64) -> Vec<f32> {
    let mut r = xorshift(seed);
    let mut v = Vec::with_capacity(32 * blocks);
    for b in 0..blocks {
        for i in 0..32 {
            let x = r();
            v.push(match b % 11 {
                // Ties of ±max: the first one wins.
                0 if i == 3 => 2.0,
                0 if i == 9 => -2.0,
                1 if i == 3 => -2.0,
                1 if i == 9 => 2.0,
                2 => -0.0,
                3 => [0.0, -0.0][i % 2],
                4 => x * 1e-40,
                5 => x * 6e4,
                6 => 0.5,
                7 => x.abs() + 0.25,
                8 => x * 1e38,
                9 => x.powi(3),
                _ => x * (i as f32 - 16.0),
            });
        }
    }
    v
}

fn first_diff(a: &[f32], b: &[f32]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x.to_bits() != y.to_bits())
}

/// ggml's Q4_0, Q5_0 and Q8_0 numbers (qd-quant's format files hold them too; its tests check
/// those against its ports of the reference quantizers).
const GRIDS: [(&str, SymmetricGrid); 3] = [
    (
        "Q4_0",
        SymmetricGrid {
            amax: false,
            div: -8.0,
            bias: 8.5,
            qmax: 15,
            off: 8,
        },
    ),
    (
        "Q5_0",
        SymmetricGrid {
            amax: false,
            div: -16.0,
            bias: 16.5,
            qmax: 31,
            off: 16,
        },
    ),
    (
        "Q8_0",
        SymmetricGrid {
            amax: true,
            div: 127.0,
            bias: 0.0,
            qmax: 127,
            off: 0,
        },
    ),
];

#[test]
fn symmetric_levels_equal_the_scalar_oracle() {
    // 64 blocks: four whole groups of 16; 37: a short last group.
    for (blocks, seed) in [(64, 7), (37, 8)] {
        let x = adversarial(blocks, seed);
        for (kind, g) in GRIDS {
            let mut want = vec![0f32; x.len()];
            symmetric::scalar(g, &x, &mut want);
            for isa in Isa::supported() {
                let mut got = vec![f32::NAN; x.len()];
                symmetric_at(isa, g, &x, &mut got);
                if let Some(i) = first_diff(&got, &want) {
                    panic!(
                        "{kind} at {}: index {i}: got {} want {} from block {:?}",
                        isa.name(),
                        got[i],
                        want[i],
                        &x[i / 32 * 32..i / 32 * 32 + 32]
                    );
                }
            }
        }
    }
}

fn affine_case<const S: usize>(x: &[f32], search: AffineSearch, what: &str) {
    let mut want = vec![0f32; x.len()];
    let mut got = vec![0f32; x.len()];
    for (xs, ws) in x.chunks_exact(512 * S).zip(want.chunks_exact_mut(512 * S)) {
        affine::scalar::<S>(xs, ws, search, &qd_quant::stored_grid);
    }
    for isa in Isa::supported() {
        got.fill(f32::NAN);
        for (xs, gs) in x.chunks_exact(512 * S).zip(got.chunks_exact_mut(512 * S)) {
            affine_sets_at::<S>(isa, xs, gs, search, &qd_quant::stored_grid);
        }
        if let Some(i) = first_diff(&got, &want) {
            panic!(
                "{what} nmax {} S {S} at {}: index {i}: got {} want {} from sub-block {:?}",
                search.nmax,
                isa.name(),
                got[i],
                want[i],
                &x[i / 32 * 32..i / 32 * 32 + 32]
            );
        }
    }
}

#[test]
fn affine_levels_equal_the_scalar_oracle() {
    let q4k = AffineSearch {
        nmax: 15,
        rmin: -1.0,
        nstep: 20,
    };
    let q5k = AffineSearch {
        nmax: 31,
        rmin: -0.5,
        nstep: 15,
    };
    let mixed = adversarial(32 * 8, 11);
    let mut r = xorshift(12);
    let plain: Vec<f32> = (0..4096).map(|_| r()).collect();
    // Data already on a grid: candidate scales tie.
    let gridded: Vec<f32> = plain.iter().map(|v| (v * 30.0).round() / 30.0).collect();
    let outliers: Vec<f32> = plain
        .iter()
        .enumerate()
        .map(|(i, v)| if i % 37 == 0 { v * 80.0 } else { *v })
        .collect();
    for search in [q4k, q5k] {
        for (what, x) in [
            ("mixed", &mixed),
            ("plain", &plain),
            ("gridded", &gridded),
            ("outliers", &outliers),
            ("zeros", &vec![0.0; 1024]),
            ("constant", &vec![-1.5; 1024]),
        ] {
            affine_case::<2>(x, search, what);
            affine_case::<1>(x, search, what);
        }
    }
}
