//! Students built from tiny generated teachers: exact copies, the gemma3 layer-kind rule,
//! fake-quantized linears, and a tiny student that overfits one batch (hard labels and KD).

use candle_core::{Device, Tensor, D};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use qd_distill::loss::{cross_entropy, divergence, Divergence};
use qd_distill::student::{student_from_teacher, TrainableLinear};
use qd_fixtures::tiny::{tiny_gguf, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};
use qd_model::{ForwardOpts, Linear, Logits};
use qd_quant::FakeQuant;

const DEV: Device = Device::Cpu;

fn teacher(fam: Family) -> GgufFile {
    GgufFile::from_bytes("tiny.gguf", tiny_gguf(&TinySpec::new(fam, GgmlType::Q8_0))).unwrap()
}

fn logits<L: Linear, E: qd_model::Embedding>(
    m: &qd_model::Transformer<L, E>,
    ids: &[u32],
) -> Tensor {
    let x = Tensor::new(ids, &DEV).unwrap().unsqueeze(0).unwrap();
    m.forward(
        &x,
        None,
        &ForwardOpts {
            logits: Logits::All,
            hidden_states: false,
        },
    )
    .unwrap()
    .logits
    .unwrap()
    .squeeze(0)
    .unwrap()
}

fn ids(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 53 + 7) % 260).collect()
}

#[test]
fn student_with_every_block_is_the_dequantized_teacher() {
    for fam in [Family::Gemma3, Family::Llama, Family::Qwen2] {
        let f = teacher(fam);
        let n = qd_model::HParams::from_gguf(&f).unwrap().n_layer;
        let (student, store) = student_from_teacher(&f, &(0..n).collect::<Vec<_>>(), &DEV).unwrap();
        let reference = qd_model::load_dequantized(&f, &DEV).unwrap();
        let a = logits(&student, &ids(12));
        let b = logits(&reference, &ids(12));
        let scale = qd_fixtures::max_abs(&b);
        let diff = qd_fixtures::max_abs(&(a - b).unwrap());
        // The student takes the differentiable (composed) RMSNorm/softmax/RoPE: f32 rounding only.
        assert!(diff < 2e-6 * scale, "{fam:?}: {diff} vs scale {scale}");
        assert!(store.n_params() > 0);
    }
}

#[test]
fn gemma3_blocks_keep_their_attention_kind() {
    let f = teacher(Family::Gemma3); // 7 blocks: 0-4 local, 5 global, 6 local
    assert!(student_from_teacher(&f, &[0, 1, 2, 3, 4, 5], &DEV).is_ok());
    assert!(student_from_teacher(&f, &[0, 2], &DEV).is_ok());
    let e = student_from_teacher(&f, &[0, 1, 2, 3, 4, 6], &DEV)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("student block 5 is global but teacher block 6 is sliding-window"),
        "{e}"
    );
    let e = student_from_teacher(&f, &[9], &DEV)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    assert!(student_from_teacher(&f, &[], &DEV).is_err());
}

#[test]
fn fake_quantized_linear_uses_the_grid_and_passes_gradients_straight_through() {
    let w = Tensor::randn(0f32, 1.0, (8, 64), &DEV).unwrap();
    let var = candle_core::Var::from_tensor(&w).unwrap();
    let lin = TrainableLinear::new(
        var.as_tensor().clone(),
        None,
        Some(FakeQuant::new(GgmlType::Q4_0)),
    );
    let x = Tensor::randn(0f32, 1.0, (3, 64), &DEV).unwrap();
    let y = lin.forward(&x).unwrap();
    let fq = Tensor::from_vec(
        qd_quant::fake_quantize(
            GgmlType::Q4_0,
            &w.flatten_all().unwrap().to_vec1().unwrap(),
            64,
        )
        .unwrap(),
        (8, 64),
        &DEV,
    )
    .unwrap();
    let want = x.matmul(&fq.t().unwrap()).unwrap();
    assert_eq!(y.to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap());
    let g = y.sum_all().unwrap().backward().unwrap();
    let gw = g.get(var.as_tensor()).unwrap();
    let want_g = x.sum_keepdim(0).unwrap().broadcast_as((8, 64)).unwrap();
    let d = qd_fixtures::max_abs(&(gw - want_g).unwrap());
    assert!(d < 1e-5);
}

fn train(
    steps: usize,
    lr: f64,
    mut loss_fn: impl FnMut() -> Tensor,
    vars: Vec<candle_core::Var>,
) -> (f32, f32) {
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let first = loss_fn().to_scalar::<f32>().unwrap();
    let mut last = first;
    for _ in 0..steps {
        let l = loss_fn();
        last = l.to_scalar::<f32>().unwrap();
        opt.backward_step(&l).unwrap();
    }
    (first, last)
}

#[test]
fn tiny_student_overfits_one_batch_with_hard_labels() {
    let f = teacher(Family::Qwen2);
    let (student, store) = student_from_teacher(&f, &[0], &DEV).unwrap();
    let seq = ids(24);
    let labels = Tensor::new(&seq[1..], &DEV).unwrap();
    let mask = Tensor::ones(seq.len() - 1, candle_core::DType::F32, &DEV).unwrap();
    let (first, last) = train(
        100,
        1e-2,
        || {
            let l = logits(&student, &seq);
            cross_entropy(&l.narrow(0, 0, seq.len() - 1).unwrap(), &labels, &mask)
                .unwrap()
                .mean()
                .unwrap()
        },
        store.all_vars(),
    );
    assert!(last < 0.1 * first, "CE {first} -> {last}");
}

#[test]
fn tiny_student_learns_the_teacher_distribution() {
    let f = teacher(Family::Gemma3);
    let t = qd_model::load_quantized(&f, &DEV).unwrap();
    let seq = ids(20);
    let teacher_logits = logits(&t, &seq);
    let (student, store) = student_from_teacher(&f, &[0, 1], &DEV).unwrap();
    let mask = Tensor::ones(seq.len(), candle_core::DType::F32, &DEV).unwrap();
    // The tiny models' logits span ~±150 (their tied head reads the scaled embedding back), so a
    // high temperature is what makes the teacher's distribution informative here.
    let (first, last) = train(
        60,
        3e-3,
        || {
            divergence(
                &logits(&student, &seq),
                &teacher_logits,
                &mask,
                20.0,
                Divergence::Forward,
            )
            .unwrap()
            .mean()
            .unwrap()
        },
        store.all_vars(),
    );
    assert!(last < 0.3 * first, "KL {first} -> {last}");
    // Distilling made the student agree with the teacher's top-1 almost everywhere.
    let agree = logits(&student, &seq)
        .argmax(D::Minus1)
        .unwrap()
        .eq(&teacher_logits.argmax(D::Minus1).unwrap())
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(agree >= 0.9, "top-1 agreement {agree}");
}
