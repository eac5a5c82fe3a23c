//! A teacher reading its weights' stored blocks (`read_stored_blocks`: no repacked tiles)
//! against the same model's default graph path, on tiny generated models of each family and
//! weight type: the same integer sums, so the first position's logits agree to the order of
//! f32 sums and every position to the few per cent an 8-bit activation code flipped by an ulp
//! can move (the criteria `tests/decoder.rs` explains for the fused path).

use candle_core::{Device, Tensor};
use qd_fixtures::tiny::{tiny_gguf, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};
use qd_model::{ForwardOpts, QModel};

fn logits(model: &QModel, tokens: &[u32]) -> Vec<Vec<f32>> {
    let input = Tensor::new(tokens, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model
        .forward(&input, None, &ForwardOpts::default())
        .unwrap()
        .logits
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap()
}

fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().map(|v| v.abs()).fold(0.0, f32::max);
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    d / scale
}

#[test]
fn stored_blocks_give_the_tiled_logits() {
    let tokens: Vec<u32> = (0..21u32).map(|i| (i * 37 + 11) % 270).collect();
    // On aarch64 candle's NEON kernels scale the sub-block sums differently (tests/decoder.rs).
    let first_bound = if cfg!(target_arch = "x86_64") {
        1e-5
    } else {
        2e-3
    };
    for fam in [Family::Gemma3, Family::Llama, Family::Qwen2] {
        for ty in [
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q4K,
            GgmlType::Q6K,
        ] {
            let spec = TinySpec::new(fam, ty);
            let f = GgufFile::from_bytes(format!("tiny-{fam:?}.gguf"), tiny_gguf(&spec)).unwrap();
            let tiled = qd_model::load_quantized(&f, &Device::Cpu).unwrap();
            let mut stored = qd_model::load_quantized(&f, &Device::Cpu).unwrap();
            stored.read_stored_blocks();
            let (want, got) = (logits(&tiled, &tokens), logits(&stored, &tokens));
            assert_eq!(want.len(), got.len());
            let first = rel_diff(&got[0], &want[0]);
            assert!(first <= first_bound, "{fam:?} {ty}: first position {first}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let r = rel_diff(g, w);
                assert!(r <= 3e-2, "{fam:?} {ty}: position {i} {r}");
            }
        }
    }
}
