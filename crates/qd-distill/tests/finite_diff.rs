//! Gradients through a whole transformer block (attention with RoPE, GQA, sliding window,
//! gemma3's extra norms, the gated GELU MLP) against central finite differences: the composed,
//! differentiable ops the student trains through compute the derivative of what they compute.

use candle_core::{DType, Device, Tensor};
use qd_distill::student::student_from_teacher;
use qd_fixtures::tiny::{tiny_gguf, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};
use qd_model::{ForwardOpts, Logits};

#[test]
fn block_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    for family in [Family::Gemma3, Family::Llama, Family::Qwen2] {
        let f = GgufFile::from_bytes(
            "tiny.gguf",
            tiny_gguf(&TinySpec::new(family, GgmlType::F32)),
        )
        .unwrap();
        let (student, store) = student_from_teacher(&f, &[0], &dev).unwrap();
        let ids = Tensor::new(&[[2u32, 17, 40, 99, 5, 130, 8, 61, 12, 33]], &dev).unwrap();
        let d = student.hp.n_embd;
        let r: Vec<f32> = (0..10 * d)
            .map(|i| ((i * 7919 % 13) as f32 - 6.0) / 6.0)
            .collect();
        let r = Tensor::from_vec(r, (1, 10, d), &dev).unwrap();
        let opts = ForwardOpts {
            logits: Logits::None,
            hidden_states: false,
        };
        let objective = || -> f64 {
            let h = student.forward(&ids, None, &opts).unwrap().normed;
            (h * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let h = student.forward(&ids, None, &opts).unwrap().normed;
        let grads = (h * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let mut checked = 0;
        for (name, var) in &store.vars {
            if !name.starts_with("blk.0.") {
                continue;
            }
            let g: Vec<f32> = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let w: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            // The three coordinates with the largest gradient, where f32 differences are reliable.
            let mut idx: Vec<usize> = (0..g.len()).collect();
            idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
            for &i in idx.iter().take(3) {
                let eps = 1e-2 * w[i].abs().max(0.1);
                let at = |delta: f32| {
                    let mut v = w.clone();
                    v[i] += delta;
                    var.set(&Tensor::from_vec(v, var.dims(), &dev).unwrap())
                        .unwrap();
                    objective()
                };
                let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
                var.set(&Tensor::from_vec(w.clone(), var.dims(), &dev).unwrap())
                    .unwrap();
                let ad = g[i] as f64;
                assert!(
                    (fd - ad).abs() <= 0.03 * ad.abs() + 1e-3,
                    "{family:?} {name}[{i}]: autograd {ad} vs finite difference {fd}"
                );
                checked += 1;
            }
        }
        assert!(
            checked >= 3 * 9,
            "{family:?}: only {checked} coordinates checked"
        );
    }
}
