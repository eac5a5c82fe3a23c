//! Tiny generated models of each family against a straightforward f32 reference forward written
//! here, independently of the crate's block code (dequantized weights, explicit loops, no cache).

use candle_core::{DType, Device, Tensor, D};
use qd_fixtures::tiny::{tiny_gguf, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};
use qd_model::{ForwardOpts, Logits};

const DEV: Device = Device::Cpu;

fn open(spec: &TinySpec) -> GgufFile {
    GgufFile::from_bytes(format!("tiny-{:?}.gguf", spec.family), tiny_gguf(spec)).unwrap()
}

fn w(f: &GgufFile, name: &str) -> Tensor {
    f.dequantize(name, &DEV).unwrap()
}

fn rms(x: &Tensor, g: &Tensor) -> Tensor {
    let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    x.broadcast_div(&(ms + 1e-6).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(g)
        .unwrap()
}

/// RoPE on one head's `[s, d]`, pair (i, i+d/2) for neox, (2i, 2i+1) for llama.
fn rope(x: &[Vec<f32>], base: f32, neox: bool) -> Vec<Vec<f32>> {
    x.iter()
        .enumerate()
        .map(|(p, row)| {
            let d = row.len();
            let mut out = row.clone();
            for i in 0..d / 2 {
                let theta = p as f32 * base.powf(-((2 * i) as f32) / d as f32);
                let (a, b) = if neox {
                    (i, i + d / 2)
                } else {
                    (2 * i, 2 * i + 1)
                };
                out[a] = row[a] * theta.cos() - row[b] * theta.sin();
                out[b] = row[a] * theta.sin() + row[b] * theta.cos();
            }
            out
        })
        .collect()
}

fn reference_logits(f: &GgufFile, spec: &TinySpec, ids: &[u32]) -> Vec<Vec<f32>> {
    let gemma = spec.family == Family::Gemma3;
    let (d, hd, nh, nkv) = (spec.n_embd, spec.head_dim, spec.n_head, spec.n_head_kv);
    let s = ids.len();
    let emb = w(f, "token_embd.weight");
    let mut x = emb
        .index_select(&Tensor::new(ids, &DEV).unwrap(), 0)
        .unwrap();
    if gemma {
        x = (x * (d as f64).sqrt()).unwrap();
    }
    let lin = |x: &Tensor, name: &str| x.matmul(&w(f, name).t().unwrap()).unwrap();
    for il in 0..spec.n_layer {
        let n = |t: &str| format!("blk.{il}.{t}");
        let h = rms(&x, &w(f, &n("attn_norm.weight")));
        let mut q = lin(&h, &n("attn_q.weight"));
        let mut k = lin(&h, &n("attn_k.weight"));
        let mut v = lin(&h, &n("attn_v.weight"));
        if spec.family == Family::Qwen2 {
            q = q.broadcast_add(&w(f, &n("attn_q.bias"))).unwrap();
            k = k.broadcast_add(&w(f, &n("attn_k.bias"))).unwrap();
            v = v.broadcast_add(&w(f, &n("attn_v.bias"))).unwrap();
        }
        let swa = gemma && il % 6 < 5;
        let base = if gemma {
            if swa {
                10_000.0
            } else {
                1_000_000.0
            }
        } else {
            10_000.0
        };
        let head = |t: &Tensor, h: usize, norm: Option<&str>| -> Vec<Vec<f32>> {
            let mut t = t.narrow(1, h * hd, hd).unwrap();
            if let Some(nn) = norm {
                t = rms(&t, &w(f, &n(nn)));
            }
            t.to_vec2::<f32>().unwrap()
        };
        let mut out = vec![vec![0f32; nh * hd]; s];
        for hq in 0..nh {
            let kvh = hq / (nh / nkv);
            let qh = rope(
                &head(&q, hq, gemma.then_some("attn_q_norm.weight")),
                base,
                spec.family != Family::Llama,
            );
            let kh = rope(
                &head(&k, kvh, gemma.then_some("attn_k_norm.weight")),
                base,
                spec.family != Family::Llama,
            );
            let vh = head(&v, kvh, None);
            for i in 0..s {
                let mut scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        let visible = !swa || i - j < spec.sliding_window;
                        if !visible {
                            return f64::NEG_INFINITY;
                        }
                        qh[i]
                            .iter()
                            .zip(&kh[j])
                            .map(|(a, b)| (*a as f64) * (*b as f64))
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                scores.iter_mut().for_each(|v| *v = (*v - m).exp());
                let z: f64 = scores.iter().sum();
                for c in 0..hd {
                    out[i][hq * hd + c] = (0..=i)
                        .map(|j| scores[j] / z * vh[j][c] as f64)
                        .sum::<f64>() as f32;
                }
            }
        }
        let att = Tensor::new(out, &DEV).unwrap();
        let mut a = lin(&att, &n("attn_output.weight"));
        if gemma {
            a = rms(&a, &w(f, &n("post_attention_norm.weight")));
        }
        x = (x + a).unwrap();
        let h = rms(&x, &w(f, &n("ffn_norm.weight")));
        let g = lin(&h, &n("ffn_gate.weight"));
        let g = if gemma {
            // GELU, tanh approximation, written out.
            let c = (2.0f64 / std::f64::consts::PI).sqrt();
            let inner = ((&g + (g.powf(3.0).unwrap() * 0.044715).unwrap()).unwrap() * c).unwrap();
            ((g.clone() * 0.5).unwrap() * (inner.tanh().unwrap() + 1.0).unwrap()).unwrap()
        } else {
            (&g * candle_nn_free_sigmoid(&g)).unwrap()
        };
        let mut m = lin(
            &(g * lin(&h, &n("ffn_up.weight"))).unwrap(),
            &n("ffn_down.weight"),
        );
        if gemma {
            m = rms(&m, &w(f, &n("post_ffw_norm.weight")));
        }
        x = (x + m).unwrap();
    }
    let x = rms(&x, &w(f, "output_norm.weight"));
    let head = if spec.tied_output {
        "token_embd.weight"
    } else {
        "output.weight"
    };
    lin(&x, head).to_vec2::<f32>().unwrap()
}

fn candle_nn_free_sigmoid(x: &Tensor) -> Tensor {
    (x.neg().unwrap().exp().unwrap() + 1.0)
        .unwrap()
        .recip()
        .unwrap()
}

fn logits_of(out: qd_model::ForwardOutput) -> Vec<Vec<f32>> {
    out.logits
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn ids(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % 270).collect()
}

const FAMILIES: [Family; 3] = [Family::Gemma3, Family::Llama, Family::Qwen2];
const TYPES: [GgmlType; 6] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q4K,
];

#[test]
fn dense_forward_matches_reference() {
    for fam in FAMILIES {
        let spec = TinySpec::new(fam, GgmlType::Q8_0);
        let f = open(&spec);
        let tokens = ids(20);
        let want = reference_logits(&f, &spec, &tokens);
        let model = qd_model::load_dequantized(&f, &DEV).unwrap();
        let input = Tensor::new(tokens.as_slice(), &DEV)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let got = logits_of(
            model
                .forward(&input, None, &ForwardOpts::default())
                .unwrap(),
        );
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 1e-3, "{fam:?}: max |Δlogit| {diff}");
    }
}

/// The quantized path differs from the f32 reference only by the Q8 rounding of activations.
#[test]
fn quantized_forward_tracks_reference() {
    for fam in FAMILIES {
        for ty in TYPES {
            let mut spec = TinySpec::new(fam, ty);
            if matches!(ty, GgmlType::F32 | GgmlType::F16) {
                // Keep the tied LM head unquantized too, so only f16 rounding remains.
                spec.embd_type = ty;
            }
            let f = open(&spec);
            let tokens = ids(16);
            let want = reference_logits(&f, &spec, &tokens);
            let model = qd_model::load_quantized(&f, &DEV).unwrap();
            let input = Tensor::new(tokens.as_slice(), &DEV)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let got = logits_of(
                model
                    .forward(&input, None, &ForwardOpts::default())
                    .unwrap(),
            );
            let scale = want.iter().flatten().map(|v| v.abs()).fold(0.0, f32::max);
            let diff = max_abs_diff(&got, &want);
            let tol = if matches!(ty, GgmlType::F32 | GgmlType::F16) {
                1e-3 * scale
            } else {
                0.05 * scale
            };
            assert!(
                diff <= tol,
                "{fam:?} {ty}: max |Δlogit| {diff} vs scale {scale}"
            );
            // And the argmax agrees almost everywhere.
            let agree = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| argmax(a) == argmax(b))
                .count();
            assert!(
                agree * 10 >= tokens.len() * 8,
                "{fam:?} {ty}: top-1 agrees at {agree}/{}",
                tokens.len()
            );
        }
    }
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
}

/// Full-prefix, one-pass and KV-cache forwards agree (f32 weights), including past the window.
#[test]
fn cache_and_one_pass_agree() {
    for fam in FAMILIES {
        let spec = TinySpec::new(fam, GgmlType::F32);
        let f = open(&spec);
        let model = qd_model::load_dequantized(&f, &DEV).unwrap();
        let tokens = ids(21);
        let input = |t: &[u32]| Tensor::new(t, &DEV).unwrap().unsqueeze(0).unwrap();
        let full = logits_of(
            model
                .forward(&input(&tokens), None, &ForwardOpts::default())
                .unwrap(),
        );
        // Token by token through the cache.
        let mut cache = model.new_cache();
        let mut step = Vec::new();
        for &t in &tokens {
            step.extend(logits_of(
                model
                    .forward(&input(&[t]), Some(&mut cache), &ForwardOpts::default())
                    .unwrap(),
            ));
        }
        assert!(
            max_abs_diff(&full, &step) < 1e-4,
            "{fam:?} one-token decoding: {}",
            max_abs_diff(&full, &step)
        );
        // Chunked prefill after a cache: 5 + 9 + 7.
        let mut cache = model.new_cache();
        let mut chunked = Vec::new();
        for r in [0..5, 5..14, 14..21] {
            chunked.extend(logits_of(
                model
                    .forward(
                        &input(&tokens[r]),
                        Some(&mut cache),
                        &ForwardOpts::default(),
                    )
                    .unwrap(),
            ));
        }
        assert!(
            max_abs_diff(&full, &chunked) < 1e-4,
            "{fam:?} chunked prefill: {}",
            max_abs_diff(&full, &chunked)
        );
        // 21 positions past an 8-key window: sliding layers keep the 7 keys still in reach,
        // global layers all 21.
        for (il, block) in model.blocks.iter().enumerate() {
            let want = match (block.swa, model.hp.sliding_window) {
                (true, Some(w)) => (w - 1).min(21),
                _ => 21,
            };
            assert_eq!(cache.layer_len(il), want, "{fam:?} layer {il}");
        }
        if fam == Family::Gemma3 {
            assert!(
                model.blocks.iter().any(|b| b.swa),
                "the tiny gemma3 has sliding layers"
            );
        }
        // Prefix forwards: position i of a longer prefix equals the last of prefix i+1.
        for n in [1, 9, 20] {
            let pre = logits_of(
                model
                    .forward(
                        &input(&tokens[..n]),
                        None,
                        &ForwardOpts {
                            logits: Logits::Last,
                            hidden_states: false,
                        },
                    )
                    .unwrap(),
            );
            assert!(
                max_abs_diff(&pre, &full[n - 1..n]) < 1e-4,
                "{fam:?} prefix {n}"
            );
        }
        // A logits range equals the slice of all logits.
        let ranged = logits_of(
            model
                .forward(
                    &input(&tokens),
                    None,
                    &ForwardOpts {
                        logits: Logits::Range(3..11),
                        hidden_states: true,
                    },
                )
                .unwrap(),
        );
        assert!(max_abs_diff(&ranged, &full[3..11]) < 1e-5);
    }
}

#[test]
fn hidden_states_one_per_block() {
    let spec = TinySpec::new(Family::Gemma3, GgmlType::Q8_0);
    let f = open(&spec);
    let model = qd_model::load_quantized(&f, &DEV).unwrap();
    let input = Tensor::new(&ids(6)[..], &DEV)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let out = model
        .forward(
            &input,
            None,
            &ForwardOpts {
                logits: Logits::None,
                hidden_states: true,
            },
        )
        .unwrap();
    assert!(out.logits.is_none());
    assert_eq!(out.hidden_states.len(), spec.n_layer);
    assert_eq!(out.hidden_states[0].dims(), &[1, 6, spec.n_embd]);
}

/// On an Arm core without the dot-product extension candle's quantized kernels would die of
/// SIGILL (they use `sdot` unconditionally): the graph path refuses them with a one-line error
/// instead, and runs everywhere else. `tools/arm-check.sh` runs this on a Cortex-A72.
#[test]
fn quantized_graph_runs_or_refuses_in_one_line() {
    let spec = TinySpec::new(Family::Llama, GgmlType::Q4K);
    let f = open(&spec);
    let model = qd_model::load_quantized(&f, &DEV).unwrap();
    let input = Tensor::new(ids(4).as_slice(), &DEV)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let got = model.forward(&input, None, &ForwardOpts::default());
    #[cfg(target_arch = "aarch64")]
    let refuses = !std::arch::is_aarch64_feature_detected!("dotprod");
    #[cfg(not(target_arch = "aarch64"))]
    let refuses = false;
    if refuses {
        let e = got
            .err()
            .expect("refused without the dot-product extension")
            .to_string();
        assert!(
            e.contains("dot-product extension") && !e.contains('\n'),
            "{e}"
        );
    } else {
        assert!(got.is_ok(), "{:?}", got.err());
    }
}
