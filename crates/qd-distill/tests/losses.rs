//! Every loss against values computed by hand in f64, gradients against finite differences,
//! masking, shifting, and chunked sums against the unchunked loss.

use candle_core::{DType, Device, Tensor, Var};
use qd_distill::loss::{
    self, cross_entropy, divergence, divergence_topk, feature_loss, Divergence, FeatureKind,
    TeacherTopK,
};

const DEV: Device = Device::Cpu;

fn t2(rows: &[&[f64]]) -> Tensor {
    let n = rows.len();
    let v = rows[0].len();
    Tensor::from_vec(
        rows.iter()
            .flat_map(|r| r.iter().copied())
            .collect::<Vec<_>>(),
        (n, v),
        &DEV,
    )
    .unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn softmax(z: &[f64], t: f64) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|x| ((x - m) / t).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).map(|(a, b)| a * (a.ln() - b.ln())).sum()
}

const S: [[f64; 4]; 3] = [
    [1.0, 2.0, 0.5, -1.0],
    [0.0, 0.3, 3.0, 1.0],
    [2.0, -2.0, 0.0, 0.1],
];
const T: [[f64; 4]; 3] = [
    [0.5, 2.5, 1.0, -0.5],
    [1.0, 0.0, 2.0, 2.0],
    [-1.0, 1.0, 0.5, 0.0],
];

fn st() -> (Tensor, Tensor) {
    (t2(&[&S[0], &S[1], &S[2]]), t2(&[&T[0], &T[1], &T[2]]))
}

#[test]
fn forward_reverse_and_jsd_match_hand_values_with_masking() {
    let (s, t) = st();
    let mask = Tensor::new(&[1.0f64, 0.0, 1.0], &DEV).unwrap();
    let temp = 2.0;
    let rows = [0usize, 2];
    let p = |z: &[f64; 4]| softmax(z, temp);
    let fwd: f64 = rows.iter().map(|&i| kl(&p(&T[i]), &p(&S[i]))).sum();
    let rev: f64 = rows.iter().map(|&i| kl(&p(&S[i]), &p(&T[i]))).sum();
    let beta = 0.3;
    let jsd: f64 = rows
        .iter()
        .map(|&i| {
            let (pt, ps) = (p(&T[i]), p(&S[i]));
            let m: Vec<f64> = pt
                .iter()
                .zip(&ps)
                .map(|(a, b)| beta * a + (1.0 - beta) * b)
                .collect();
            beta * kl(&pt, &m) + (1.0 - beta) * kl(&ps, &m)
        })
        .sum();
    for (div, want) in [
        (Divergence::Forward, fwd),
        (Divergence::Reverse, rev),
        (Divergence::Jsd { beta }, jsd),
        (Divergence::Jsd { beta: 0.0 }, fwd),
        (Divergence::Jsd { beta: 1.0 }, rev),
    ] {
        let got = divergence(&s, &t, &mask, temp, div).unwrap();
        assert_eq!(got.count, 2.0);
        assert!(
            (scalar(&got.sum) - want).abs() < 1e-12,
            "{div:?}: {} vs {want}",
            scalar(&got.sum)
        );
        assert!((scalar(&got.mean().unwrap()) - want / 2.0).abs() < 1e-12);
    }
    // The masked row's logits do not matter.
    let mut s2 = S;
    s2[1] = [9.0, -9.0, 9.0, 0.0];
    let s2 = t2(&[&s2[0], &s2[1], &s2[2]]);
    let a = divergence(&s, &t, &mask, temp, Divergence::Forward).unwrap();
    let b = divergence(&s2, &t, &mask, temp, Divergence::Forward).unwrap();
    assert_eq!(scalar(&a.sum), scalar(&b.sum));
}

#[test]
fn combine_scales_the_soft_loss_by_t_squared() {
    let kd = Tensor::new(0.25f64, &DEV).unwrap();
    let ce = Tensor::new(2.0f64, &DEV).unwrap();
    let f = Tensor::new(0.5f64, &DEV).unwrap();
    let total = loss::combine(&kd, &ce, Some(&f), 0.7, 3.0, 0.1).unwrap();
    assert!((scalar(&total) - (0.7 * 9.0 * 0.25 + 0.3 * 2.0 + 0.1 * 0.5)).abs() < 1e-12);
}

#[test]
fn cross_entropy_matches_hand_values() {
    let (s, _) = st();
    let labels = Tensor::new(&[1u32, 3, 0], &DEV).unwrap();
    let mask = Tensor::new(&[1.0f64, 1.0, 0.0], &DEV).unwrap();
    let want = -(softmax(&S[0], 1.0)[1].ln()) - softmax(&S[1], 1.0)[3].ln();
    let got = cross_entropy(&s, &labels, &mask).unwrap();
    assert!((scalar(&got.sum) - want).abs() < 1e-12);
    assert_eq!(got.count, 2.0);
}

#[test]
fn top_k_with_tail_bucket() {
    let (s, t) = st();
    let mask = Tensor::new(&[1.0f64, 1.0, 1.0], &DEV).unwrap();
    let temp = 1.5;
    let k = 2;
    let top = TeacherTopK::from_logits(&t, k, temp).unwrap();
    let mut want = 0.0;
    for i in 0..3 {
        let pt = softmax(&T[i], temp);
        let ps = softmax(&S[i], temp);
        let mut idx: Vec<usize> = (0..4).collect();
        idx.sort_by(|a, b| pt[*b].total_cmp(&pt[*a]));
        let (mut bt, mut bs): (Vec<f64>, Vec<f64>) =
            idx[..k].iter().map(|&j| (pt[j], ps[j])).unzip();
        bt.push(1.0 - bt.iter().sum::<f64>());
        bs.push(1.0 - bs.iter().sum::<f64>());
        want += kl(&bt, &bs);
    }
    let got = divergence_topk(&s, &top, &mask, temp, Divergence::Forward).unwrap();
    assert!(
        (scalar(&got.sum) - want).abs() < 1e-10,
        "{} vs {want}",
        scalar(&got.sum)
    );
    // With every token kept the tail is empty and the loss is the full divergence.
    let all = TeacherTopK::from_logits(&t, 4, temp).unwrap();
    let full = divergence(&s, &t, &mask, temp, Divergence::Forward).unwrap();
    let got = divergence_topk(&s, &all, &mask, temp, Divergence::Forward).unwrap();
    assert!((scalar(&got.sum) - scalar(&full.sum)).abs() < 1e-9);
}

#[test]
fn feature_losses() {
    let s = t2(&[&[1.0, 2.0], &[0.0, 1.0]]);
    let t = t2(&[&[2.0, 2.0], &[0.0, -1.0]]);
    let mask = Tensor::new(&[1.0f64, 1.0], &DEV).unwrap();
    let mse = feature_loss(&s, &t, None, &mask, FeatureKind::Mse).unwrap();
    assert!((scalar(&mse.sum) - (0.5 + 2.0)).abs() < 1e-12);
    let cos = feature_loss(&s, &t, None, &mask, FeatureKind::Cosine).unwrap();
    let c0 = (2.0 + 4.0) / (5f64.sqrt() * 8f64.sqrt());
    assert!((scalar(&cos.sum) - ((1.0 - c0) + 2.0)).abs() < 1e-9);
    // Widths differ: a projection is required, and applied.
    let t3 = t2(&[&[1.0, 2.0, 3.0], &[0.0, 0.0, 1.0]]);
    assert!(feature_loss(&s, &t3, None, &mask, FeatureKind::Mse).is_err());
    let p = t2(&[&[1.0, 0.0], &[0.0, 1.0], &[1.0, 1.0]]);
    let got = feature_loss(&s, &t3, Some(&p), &mask, FeatureKind::Mse).unwrap();
    // s·pᵀ = [[1,2,3],[0,1,1]] → squared errors [0,0,0] and [0,1,0] → means 0 and 1/3.
    assert!((scalar(&got.sum) - 1.0 / 3.0).abs() < 1e-12);
}

#[test]
fn next_token_shift_masks_padding_targets() {
    let (tgt, mask) = loss::shift::next_token_targets(&[2, 10, 11, 0, 0], Some(0), &DEV).unwrap();
    assert_eq!(tgt.to_vec1::<u32>().unwrap(), vec![10, 11, 0, 0]);
    assert_eq!(mask.to_vec1::<f32>().unwrap(), vec![1.0, 1.0, 0.0, 0.0]);
    assert!(loss::shift::next_token_targets(&[2], None, &DEV).is_err());
}

#[test]
fn chunked_sums_equal_the_whole() {
    let n = 13;
    let v = 7;
    let data: Vec<f64> = (0..n * v)
        .map(|i| ((i * 37 % 11) as f64 - 5.0) * 0.3)
        .collect();
    let tdata: Vec<f64> = (0..n * v)
        .map(|i| ((i * 17 % 13) as f64 - 6.0) * 0.25)
        .collect();
    let s = Tensor::from_vec(data, (n, v), &DEV).unwrap();
    let t = Tensor::from_vec(tdata, (n, v), &DEV).unwrap();
    let mask = Tensor::from_vec(
        (0..n)
            .map(|i| if i % 4 == 3 { 0.0 } else { 1.0 })
            .collect::<Vec<f64>>(),
        n,
        &DEV,
    )
    .unwrap();
    let labels = Tensor::from_vec(
        (0..n as u32).map(|i| i % v as u32).collect::<Vec<_>>(),
        n,
        &DEV,
    )
    .unwrap();
    for div in [
        Divergence::Forward,
        Divergence::Reverse,
        Divergence::Jsd { beta: 0.5 },
    ] {
        let whole = divergence(&s, &t, &mask, 2.0, div).unwrap();
        let mut acc: Option<loss::TokenSum> = None;
        for (a, len) in [(0, 5), (5, 5), (10, 3)] {
            let part = divergence(
                &s.narrow(0, a, len).unwrap(),
                &t.narrow(0, a, len).unwrap(),
                &mask.narrow(0, a, len).unwrap(),
                2.0,
                div,
            )
            .unwrap();
            acc = Some(match acc {
                None => part,
                Some(x) => x.add(&part).unwrap(),
            });
        }
        let acc = acc.unwrap();
        assert_eq!(acc.count, whole.count);
        assert!(
            (scalar(&acc.mean().unwrap()) - scalar(&whole.mean().unwrap())).abs() < 1e-12,
            "{div:?}"
        );
    }
    let whole = cross_entropy(&s, &labels, &mask).unwrap();
    let a = cross_entropy(
        &s.narrow(0, 0, 6).unwrap(),
        &labels.narrow(0, 0, 6).unwrap(),
        &mask.narrow(0, 0, 6).unwrap(),
    )
    .unwrap();
    let b = cross_entropy(
        &s.narrow(0, 6, 7).unwrap(),
        &labels.narrow(0, 6, 7).unwrap(),
        &mask.narrow(0, 6, 7).unwrap(),
    )
    .unwrap();
    assert!(
        (scalar(&a.add(&b).unwrap().mean().unwrap()) - scalar(&whole.mean().unwrap())).abs()
            < 1e-12
    );
}

/// Autograd gradients of each loss with respect to the student logits against central finite
/// differences in f64.
#[test]
fn gradients_match_finite_differences() {
    let (s0, t) = st();
    let mask = Tensor::new(&[1.0f64, 0.0, 1.0], &DEV).unwrap();
    let labels = Tensor::new(&[1u32, 3, 0], &DEV).unwrap();
    let top = TeacherTopK::from_logits(&t, 2, 1.7).unwrap();
    type LossFn<'a> = Box<dyn Fn(&Tensor) -> Tensor + 'a>;
    let losses: Vec<(&str, LossFn)> = vec![
        (
            "forward",
            Box::new(|s| {
                divergence(s, &t, &mask, 1.7, Divergence::Forward)
                    .unwrap()
                    .mean()
                    .unwrap()
            }),
        ),
        (
            "reverse",
            Box::new(|s| {
                divergence(s, &t, &mask, 1.7, Divergence::Reverse)
                    .unwrap()
                    .mean()
                    .unwrap()
            }),
        ),
        (
            "jsd",
            Box::new(|s| {
                divergence(s, &t, &mask, 1.7, Divergence::Jsd { beta: 0.4 })
                    .unwrap()
                    .mean()
                    .unwrap()
            }),
        ),
        (
            "topk",
            Box::new(|s| {
                divergence_topk(s, &top, &mask, 1.7, Divergence::Forward)
                    .unwrap()
                    .mean()
                    .unwrap()
            }),
        ),
        (
            "ce",
            Box::new(|s| cross_entropy(s, &labels, &mask).unwrap().mean().unwrap()),
        ),
    ];
    for (name, f) in &losses {
        let v = Var::from_tensor(&s0).unwrap();
        let grads = f(v.as_tensor()).backward().unwrap();
        let g = grads.get(v.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        let base = s0.to_vec2::<f64>().unwrap();
        let h = 1e-6;
        for i in 0..3 {
            for j in 0..4 {
                let mut plus = base.clone();
                plus[i][j] += h;
                let mut minus = base.clone();
                minus[i][j] -= h;
                let fp = scalar(&f(&t2(&[&plus[0], &plus[1], &plus[2]])));
                let fm = scalar(&f(&t2(&[&minus[0], &minus[1], &minus[2]])));
                let num = (fp - fm) / (2.0 * h);
                assert!(
                    (num - g[i][j]).abs() < 1e-6,
                    "{name} d/ds[{i}][{j}]: autograd {} vs numeric {num}",
                    g[i][j]
                );
            }
        }
    }
}
