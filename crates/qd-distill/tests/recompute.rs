//! Blocks recomputed in backward (`checkpoint_blocks`) give the same loss and the same
//! gradients, bit for bit, as the backward that keeps every activation — for each family, under
//! QAT with and without learned steps, with a trained embedding, over a batch of two.

use candle_core::Device;
use qd_distill::loss::Divergence;
use qd_distill::train::chunked::LossConfig;
use qd_distill::train::step::{batch_loss_and_grads, TeacherSource};
use qd_fixtures::tiny::Family;

mod common;

const DEV: Device = Device::Cpu;

fn check(fam: Family, learned: bool, div: Divergence, fused: bool) {
    let (teacher, qat, store) = common::tiny_qat(fam, learned);
    let params = store.all_vars();
    assert!(
        store.vars.contains_key("token_embd.weight"),
        "the embedding is trained here"
    );
    let examples: Vec<_> = (0..2u32)
        .map(|k| {
            qd_distill::data::Example::plain(
                (0..14u32).map(|i| (i * 31 + k * 11 + 5) % 260).collect(),
            )
        })
        .collect();
    let grads = |checkpoint_blocks: bool, bf16_grads: bool| {
        let cfg = LossConfig {
            alpha: 0.7,
            temperature: 2.0,
            divergence: div,
            chunk: 5,
            fused,
            checkpoint_blocks,
            bf16_grads,
        };
        batch_loss_and_grads(
            &qat,
            &params,
            &TeacherSource::Model {
                model: &teacher,
                top_k: None,
            },
            &examples,
            &[],
            None,
            &cfg,
            None,
        )
        .unwrap()
    };
    // The evaluation's block-by-block forward has the whole-graph forward's bits.
    let x = candle_core::Tensor::new(examples[0].inputs.as_slice(), &DEV)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let whole = qat.forward(
        &x,
        None,
        &qd_model::ForwardOpts {
            logits: qd_model::Logits::None,
            hidden_states: false,
        },
    );
    let whole: Vec<f32> = whole
        .unwrap()
        .normed
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let bounded = qd_distill::train::recompute::forward_detached(&qat, &x).unwrap();
    let bounded: Vec<f32> = bounded.flatten_all().unwrap().to_vec1().unwrap();
    assert!(
        whole
            .iter()
            .zip(&bounded)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{fam:?}: eval forward"
    );
    let (pa, ga) = grads(false, false);
    let (pb, gb) = grads(true, false);
    // The compact state's bf16 gradients: the f32 ones rounded (a batch of two adds its
    // sequences' gradients in bf16, so within a few bf16 steps of the largest value).
    let (_, gc) = grads(true, true);
    for (name, v) in &store.vars {
        let (Some(a), Some(c)) = (ga.get(v.as_tensor()), gc.get(v.as_tensor())) else {
            continue;
        };
        assert_eq!(c.dtype(), candle_core::DType::BF16, "{name}");
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let c: Vec<f32> = c
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let top = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = a
            .iter()
            .zip(&c)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            worst <= top * 2f32.powi(-6),
            "{fam:?} {name}: bf16 gradient off by {worst} (largest {top})"
        );
    }
    assert_eq!(pa.total.to_bits(), pb.total.to_bits(), "{fam:?}: loss");
    let mut compared = 0;
    for (name, v) in &store.vars {
        let a = ga.get(v.as_tensor());
        let b = gb.get(v.as_tensor());
        assert_eq!(
            a.is_some(),
            b.is_some(),
            "{fam:?} {name}: gradient presence"
        );
        let (Some(a), Some(b)) = (a, b) else { continue };
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            a.iter().any(|x| *x != 0.0),
            "{fam:?} {name}: a zero gradient proves nothing"
        );
        let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{fam:?} {name}: gradients differ");
        compared += 1;
    }
    assert!(
        compared >= store.vars.len() - 1,
        "{fam:?}: {compared} of {}",
        store.vars.len()
    );
}

#[test]
fn recomputed_blocks_give_identical_gradients() {
    for fam in [Family::Gemma3, Family::Llama, Family::Qwen2] {
        check(fam, false, Divergence::Forward, true);
    }
    check(Family::Qwen2, true, Divergence::Forward, true);
    check(Family::Llama, false, Divergence::Jsd { beta: 0.5 }, false);
}
