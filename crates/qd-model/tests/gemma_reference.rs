//! The real teacher's logits against llama.cpp's, with the tolerances of the foundation issue.

use candle_core::{Device, Tensor};
use qd_gguf::GgufFile;
use qd_model::{ForwardOpts, Logits};

struct Stats {
    dlp: Vec<f64>,
    kl: Vec<f64>,
    top1_agree: usize,
    positions: usize,
}

/// The graph path's one pass over each prompt, and the fused decoder token by token, both
/// within the same bounds of llama.cpp's logits.
#[test]
fn teacher_logits_match_llama_cpp() {
    let f = GgufFile::open(qd_fixtures::teacher_path()).unwrap();
    let model = qd_model::load_quantized(&f, &Device::Cpu).unwrap();
    check_against_llama_cpp("one pass", |ids| {
        let input = Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let out = model
            .forward(
                &input,
                None,
                &ForwardOpts {
                    logits: Logits::All,
                    hidden_states: false,
                },
            )
            .unwrap();
        out.logits.unwrap().squeeze(0).unwrap().to_vec2().unwrap()
    });
    for isa in qd_model::Isa::supported() {
        check_against_llama_cpp(&format!("decoder ({})", isa.name()), |ids| {
            let mut d = qd_model::Decoder::new_at(isa, &model, ids.len())
                .unwrap()
                .expect("the decoder runs the teacher");
            ids.iter().map(|&t| d.step(t).unwrap().to_vec()).collect()
        });
    }
}

fn check_against_llama_cpp(label: &str, logits_of: impl Fn(&[u32]) -> Vec<Vec<f32>>) {
    let reference = qd_fixtures::read_json("gemma3-270m/llama_cpp_reference.json");
    let mut st = Stats {
        dlp: vec![],
        kl: vec![],
        top1_agree: 0,
        positions: 0,
    };
    for (name, p) in reference["prompts"].as_object().unwrap() {
        let ids: Vec<u32> = p["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let logits = logits_of(&ids);
        let lse: Vec<f64> = logits
            .iter()
            .map(|row| {
                let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
            })
            .collect();
        for (i, pos) in p["positions"].as_array().unwrap().iter().enumerate() {
            let rids: Vec<usize> = pos["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let rlog: Vec<f64> = pos["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let rlse = pos["logsumexp"].as_f64().unwrap();
            for k in 0..8 {
                let ours = logits[i][rids[k]] as f64 - lse[i];
                st.dlp.push((ours - (rlog[k] - rlse)).abs());
            }
            // KL(ref || ours) on the top-32 set, each renormalised over it.
            let norm = |xs: Vec<f64>| {
                let m = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = xs.iter().map(|x| (x - m).exp()).sum();
                xs.iter().map(|x| x - m - z.ln()).collect::<Vec<_>>()
            };
            let pr = norm(rlog.clone());
            let po = norm(rids.iter().map(|&t| logits[i][t] as f64).collect());
            st.kl
                .push(pr.iter().zip(&po).map(|(a, b)| a.exp() * (a - b)).sum());
            let argmax = logits[i]
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            let margin = rlog[0] - rlog[1];
            if argmax == rids[0] {
                st.top1_agree += 1;
            } else {
                assert!(
                    margin < 0.5,
                    "{label}: {name} pos {i}: top-1 {argmax} != llama.cpp {} with margin {margin}",
                    rids[0]
                );
            }
            st.positions += 1;
        }
    }
    let mut d = st.dlp.clone();
    d.sort_by(f64::total_cmp);
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    let p99 = d[((d.len() as f64) * 0.99) as usize - 1];
    let max = *d.last().unwrap();
    let kl = st.kl.iter().sum::<f64>() / st.kl.len() as f64;
    let agree = st.top1_agree as f64 / st.positions as f64;
    eprintln!("{label}: mean |dlogp| {mean:.4} p99 {p99:.4} max {max:.4} top32-KL {kl:.5} top1 {agree:.3} over {} positions", st.positions);
    assert!(mean <= 0.15, "{label}: mean {mean}");
    assert!(p99 <= 0.6, "{label}: p99 {p99}");
    assert!(max <= 1.5, "{label}: max {max}");
    assert!(kl <= 0.015, "{label}: kl {kl}");
    assert!(agree >= 0.85, "{label}: top-1 agreement {agree}");
}

/// With the teacher's weights dequantized to f32, one pass, token-by-token decoding through the
/// KV cache and prefix forwards agree to 1e-4 on a real prompt.
#[test]
fn dequantized_teacher_one_pass_cache_and_prefix_agree() {
    let f = GgufFile::open(qd_fixtures::teacher_path()).unwrap();
    let model = qd_model::load_dequantized(&f, &Device::Cpu).unwrap();
    let reference = qd_fixtures::read_json("gemma3-270m/llama_cpp_reference.json");
    let ids: Vec<u32> = reference["prompts"]["code"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let input = |t: &[u32]| Tensor::new(t, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let all = ForwardOpts {
        logits: Logits::All,
        hidden_states: false,
    };
    let full = model
        .forward(&input(&ids), None, &all)
        .unwrap()
        .logits
        .unwrap()
        .squeeze(0)
        .unwrap();
    let mut cache = model.new_cache();
    for (i, &t) in ids.iter().enumerate() {
        let step = model
            .forward(&input(&[t]), Some(&mut cache), &all)
            .unwrap()
            .logits
            .unwrap()
            .squeeze(0)
            .unwrap();
        let d = qd_fixtures::max_abs(&(step - full.narrow(0, i, 1).unwrap()).unwrap());
        assert!(d < 1e-4, "position {i}: cache vs one pass {d}");
    }
    let n = ids.len() / 2;
    let last = ForwardOpts {
        logits: Logits::Last,
        hidden_states: false,
    };
    let prefix = model
        .forward(&input(&ids[..n]), None, &last)
        .unwrap()
        .logits
        .unwrap()
        .squeeze(0)
        .unwrap();
    let d = qd_fixtures::max_abs(&(prefix - full.narrow(0, n - 1, 1).unwrap()).unwrap());
    assert!(d < 1e-4, "prefix vs one pass {d}");
}
