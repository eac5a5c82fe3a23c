//! The chunked LM-head loss gives the same loss and gradients as the whole-batch one.

use candle_core::{DType, Device, Tensor};
use qd_distill::loss::{cross_entropy, divergence, Divergence};
use qd_distill::student::student_from_teacher_with;
use qd_distill::train::chunked::{chunked_loss_and_grads, LossConfig, TeacherRows};
use qd_fixtures::tiny::{tiny_gguf, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};
use qd_model::{ForwardOpts, Linear, Logits, WeightSource};

/// Forward and reverse KL take the fused loss (closed-form logit gradients), JSD the composed
/// ops; all three must equal plain autograd over the whole batch, with the tied embedding
/// trained and frozen (then the fused losses backpropagate through the LM head by hand).
#[test]
fn chunked_equals_unchunked() {
    for frozen in [&[][..], &["token_embd.weight", "output.weight"][..]] {
        for div in [
            Divergence::Forward,
            Divergence::Reverse,
            Divergence::Jsd { beta: 0.3 },
        ] {
            // T = 1 and 2 take the fused loss's shortcuts for the CE term; 15 the general path.
            // The device-generic path composes every divergence from candle's ops.
            for temperature in [1.0, 2.0, 15.0] {
                for fused in [true, false] {
                    check(div, frozen, temperature, fused);
                }
            }
        }
    }
}

fn check(div: Divergence, frozen: &[&str], temperature: f64, fused: bool) {
    let dev = Device::Cpu;
    let f = GgufFile::from_bytes(
        "tiny.gguf",
        tiny_gguf(&TinySpec::new(Family::Gemma3, GgmlType::Q8_0)),
    )
    .unwrap();
    let teacher = qd_model::load_quantized(&f, &dev).unwrap();
    let (student, store) = student_from_teacher_with(&f, &[0, 1], frozen, &dev).unwrap();
    assert_eq!(
        student.lm_head.is_frozen_plain(),
        !frozen.is_empty(),
        "the tied head is frozen exactly when the embedding is"
    );
    let seq: Vec<u32> = (0..23u32).map(|i| (i * 31 + 3) % 260).collect();
    let x = Tensor::new(&seq[..22], &dev).unwrap().unsqueeze(0).unwrap();
    let targets = Tensor::new(&seq[1..], &dev).unwrap();
    let mask = Tensor::from_vec(
        (0..22)
            .map(|i| if i % 5 == 4 { 0f32 } else { 1.0 })
            .collect::<Vec<_>>(),
        22,
        &dev,
    )
    .unwrap();
    let opts = ForwardOpts {
        logits: Logits::None,
        hidden_states: false,
    };
    let t_normed = teacher
        .forward(&x, None, &opts)
        .unwrap()
        .normed
        .squeeze(0)
        .unwrap();
    let cfg = LossConfig {
        alpha: 0.6,
        temperature,
        divergence: div,
        chunk: 5,
        fused,
        checkpoint_blocks: false,
        bf16_grads: false,
    };

    let s_normed = student
        .forward(&x, None, &opts)
        .unwrap()
        .normed
        .squeeze(0)
        .unwrap();
    let params = store.all_vars();
    let rows = TeacherRows::Model {
        model: &teacher,
        normed: &t_normed,
        top_k: None,
    };
    let (parts, grads) =
        chunked_loss_and_grads(&student, &params, &s_normed, &rows, &targets, &mask, &cfg).unwrap();

    // Whole batch, plain autograd, through the head as a dense matmul (the student's frozen
    // head is kept in Q8_0, whose product has no autograd) — first checked against the
    // student's own logits.
    let head = if store.has("output.weight") {
        "output.weight"
    } else {
        "token_embd.weight"
    };
    let w = store.tensor(head).unwrap();
    let s_logits = s_normed.matmul(&w.t().unwrap()).unwrap();
    let own = student
        .forward(&x, None, &ForwardOpts::default())
        .unwrap()
        .logits
        .unwrap()
        .squeeze(0)
        .unwrap();
    let d = qd_fixtures::max_abs(&(&own - &s_logits).unwrap());
    assert!(
        d <= 1e-4 * qd_fixtures::max_abs(&own).max(1.0),
        "head: max |Δlogit| {d}"
    );
    let t_logits = teacher
        .lm_head(&t_normed.unsqueeze(0).unwrap())
        .unwrap()
        .squeeze(0)
        .unwrap();
    let kd = divergence(&s_logits, &t_logits, &mask, cfg.temperature, cfg.divergence)
        .unwrap()
        .mean()
        .unwrap();
    let ce = cross_entropy(&s_logits, &targets, &mask)
        .unwrap()
        .mean()
        .unwrap();
    let total = qd_distill::loss::combine(&kd, &ce, None, cfg.alpha, cfg.temperature, 0.0).unwrap();
    let want = total
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(
        (parts.total - want).abs() < 1e-4 * want.abs().max(1.0),
        "{} vs {want}",
        parts.total
    );
    let whole = total.backward().unwrap();
    let mut checked = 0;
    for (name, var) in &store.vars {
        let a = grads.get(var.as_tensor());
        let b = whole.get(var.as_tensor());
        match (a, b) {
            (Some(a), Some(b)) => {
                let scale = qd_fixtures::max_abs(b).max(1e-6);
                let d = qd_fixtures::max_abs(&(a - b).unwrap());
                assert!(
                    d <= 1e-3 * scale,
                    "{div:?} frozen {frozen:?} {name}: max |Δgrad| {d} vs scale {scale}"
                );
                checked += 1;
            }
            (None, None) => {}
            _ => panic!("{name}: gradient present in only one of the two"),
        }
    }
    // Every student tensor takes part in the loss, so every one must have received a gradient.
    assert_eq!(checked, store.vars.len());
}

/// The fused CPU loss (closed-form gradients, one pass per row) and the same loss composed from
/// candle's ops and differentiated by autograd — the device-generic path — agree on the loss
/// and on its gradient with respect to the student's logits within 1e-5 relative.
#[test]
fn fused_loss_equals_the_composed_ops() {
    use qd_distill::loss::fused::fused_loss;
    let dev = Device::Cpu;
    let (n, v) = (9, 3000);
    // Deterministic pseudo-normal logits (sums of uniforms), so the check is the same each run.
    let logits = |seed: u32, scale: f32| {
        let mut x = seed.wrapping_mul(2654435761).max(1);
        let mut u = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as f32 / u32::MAX as f32 - 0.5
        };
        let v: Vec<f32> = (0..n * v)
            .map(|_| (u() + u() + u() + u()) * scale)
            .collect();
        Tensor::from_vec(v, (n, 3000), &dev).unwrap()
    };
    let s = logits(1, 3.0);
    let t = logits(2, 4.0);
    let targets: Vec<u32> = (0..n as u32).map(|i| (i * 331 + 17) % v as u32).collect();
    let mask: Vec<f32> = (0..n).map(|i| if i == 4 { 0.0 } else { 1.0 }).collect();
    for div in [Divergence::Forward, Divergence::Reverse] {
        for temperature in [1.0, 2.0, 15.0] {
            let (w_kd, w_ce) = (0.6 * temperature * temperature / 8.0, 0.4 / 8.0);
            let f = fused_loss(&s, &t, &targets, &mask, temperature, div, w_kd, w_ce).unwrap();
            let fused_total = w_kd * f.kd_sum + w_ce * f.ce_sum;
            let var = candle_core::Var::from_tensor(&s).unwrap();
            let m = Tensor::new(mask.as_slice(), &dev).unwrap();
            let tg = Tensor::new(targets.as_slice(), &dev).unwrap();
            let kd = divergence(var.as_tensor(), &t, &m, temperature, div).unwrap();
            let ce = cross_entropy(var.as_tensor(), &tg, &m).unwrap();
            let total =
                (kd.sum.affine(w_kd, 0.0).unwrap() + ce.sum.affine(w_ce, 0.0).unwrap()).unwrap();
            let composed = total
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(
                (fused_total - composed).abs() <= 1e-5 * composed.abs(),
                "{div:?} T={temperature}: loss {fused_total} vs {composed}"
            );
            let g = total.backward().unwrap();
            let g = g.get(var.as_tensor()).unwrap();
            let scale = qd_fixtures::max_abs(g);
            let d = qd_fixtures::max_abs(&(g - &f.grad).unwrap());
            assert!(
                d <= 1e-5 * scale,
                "{div:?} T={temperature}: max |Δgrad| {d} vs max |grad| {scale}"
            );
        }
    }
}

/// The fused top-k + tail loss (cached or online top-k teachers) against the composed ops and
/// autograd: loss and logit gradients within 1e-5 relative, with a tail that the floor clamps
/// (a teacher row whose top k hold all the mass: its tail at the floor) among the rows.
#[test]
fn fused_topk_loss_equals_the_composed_ops() {
    use qd_distill::loss::fused_topk::{fused_topk_loss, TopKRows};
    use qd_distill::loss::{divergence_topk, TeacherTopK};
    let dev = Device::Cpu;
    let (n, v, k) = (7, 2000, 16);
    let wave = |i: usize, j: usize, s: f32| (((i * 31 + j * 17) % 97) as f32 / 97.0 - 0.5) * s;
    let s: Vec<f32> = (0..n * v).map(|x| wave(x / v, x % v, 6.0)).collect();
    let mut t: Vec<f32> = (0..n * v)
        .map(|x| wave(x / v + 3, x % v * 7, 8.0))
        .collect();
    // Row 2: a teacher whose top-k hold (almost) everything.
    for j in 0..v {
        t[2 * v + j] = if j < k { 40.0 } else { -40.0 };
    }
    let st = Tensor::from_vec(s, (n, v), &dev).unwrap();
    let tt = Tensor::from_vec(t, (n, v), &dev).unwrap();
    let targets: Vec<u32> = (0..n as u32).map(|i| (i * 311 + 5) % v as u32).collect();
    let mask: Vec<f32> = (0..n).map(|i| if i == 5 { 0.0 } else { 1.0 }).collect();
    for temperature in [1.0, 2.0, 3.0] {
        let top = TeacherTopK::from_logits(&tt, k, temperature).unwrap();
        let ids = top.ids.flatten_all().unwrap().to_vec1::<u32>().unwrap();
        let lps = top
            .logprobs
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let tails: Vec<f32> = lps
            .chunks(k)
            .map(qd_distill::teacher_cache::codec::log_tail)
            .collect();
        let rows = TopKRows {
            k,
            ids: &ids,
            logprobs: &lps,
            log_tail: &tails,
        };
        let (w_kd, w_ce) = (0.7 * temperature * temperature / 6.0, 0.3 / 6.0);
        let f = fused_topk_loss(&st, &rows, &targets, &mask, temperature, w_kd, w_ce).unwrap();
        let fused_total = w_kd * f.kd_sum + w_ce * f.ce_sum;
        let var = candle_core::Var::from_tensor(&st).unwrap();
        let m = Tensor::new(mask.as_slice(), &dev).unwrap();
        let tg = Tensor::new(targets.as_slice(), &dev).unwrap();
        let teacher = TeacherTopK {
            log_tail: Some(Tensor::from_vec(tails.clone(), (n, 1), &dev).unwrap()),
            ..top
        };
        let kd = divergence_topk(
            var.as_tensor(),
            &teacher,
            &m,
            temperature,
            Divergence::Forward,
        )
        .unwrap();
        let ce = cross_entropy(var.as_tensor(), &tg, &m).unwrap();
        let total =
            (kd.sum.affine(w_kd, 0.0).unwrap() + ce.sum.affine(w_ce, 0.0).unwrap()).unwrap();
        let composed = total
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(
            (fused_total - composed).abs() <= 1e-5 * composed.abs(),
            "T={temperature}: loss {fused_total} vs {composed}"
        );
        let g = total.backward().unwrap();
        let g = g.get(var.as_tensor()).unwrap();
        let scale = qd_fixtures::max_abs(g);
        let d = qd_fixtures::max_abs(&(g - &f.grad).unwrap());
        assert!(
            d <= 1e-5 * scale,
            "T={temperature}: max |Δgrad| {d} vs max |grad| {scale}"
        );
    }
}
