use candle_core::{Device, Tensor};
use qd_eval::{PerplexityParams, Sampler, SamplerParams};
use qd_fixtures::tiny::{tiny_gguf, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};
use qd_model::{ForwardOpts, Logits};

fn tiny(fam: Family) -> GgufFile {
    GgufFile::from_bytes("tiny.gguf", tiny_gguf(&TinySpec::new(fam, GgmlType::Q8_0))).unwrap()
}

/// Greedy generation through the KV cache picks, at each step, the argmax of a full forward
/// over everything so far.
#[test]
fn cached_generation_equals_full_forward() {
    for fam in [Family::Gemma3, Family::Llama, Family::Qwen2] {
        let f = tiny(fam);
        let model = qd_model::load_dequantized(&f, &Device::Cpu).unwrap();
        let prompt = vec![2u32, 40, 41, 42];
        let mut s = Sampler::new(SamplerParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        });
        let out = qd_eval::generate(&model, &prompt, 12, &mut s, &[], |_| {}).unwrap();
        assert_eq!(out.len(), 12);
        let too_many = model.hp.context_length;
        let e = qd_eval::generate(&model, &prompt, too_many, &mut s, &[], |_| {}).unwrap_err();
        assert!(e.to_string().contains("context"), "{e}");
        let mut seq = prompt.clone();
        for &t in &out {
            let x = Tensor::new(seq.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let l = model
                .forward(
                    &x,
                    None,
                    &ForwardOpts {
                        logits: Logits::Last,
                        hidden_states: false,
                    },
                )
                .unwrap();
            let row = l
                .logits
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0 as u32;
            assert_eq!(t, best, "{fam:?}");
            seq.push(t);
        }
    }
}

#[test]
fn sampling_is_seeded_and_respects_top_k() {
    let logits: Vec<f32> = (0..50).map(|i| (i as f32) * 0.1).collect();
    let p = SamplerParams {
        temperature: 1.0,
        top_k: 3,
        top_p: 1.0,
        seed: 5,
    };
    let a: Vec<u32> = {
        let mut s = Sampler::new(p);
        (0..50).map(|_| s.sample(&logits)).collect()
    };
    let b: Vec<u32> = {
        let mut s = Sampler::new(p);
        (0..50).map(|_| s.sample(&logits)).collect()
    };
    assert_eq!(a, b);
    assert!(a.iter().all(|&t| t >= 47));
    assert!(
        a.iter().any(|&t| t != 49),
        "temperature 1 over 3 close logits must not be greedy"
    );
}

/// Perplexity of a tiny model equals exp(mean NLL) computed by hand over the same positions.
#[test]
fn perplexity_matches_hand_computation() {
    let f = tiny(Family::Llama);
    let model = qd_model::load_dequantized(&f, &Device::Cpu).unwrap();
    let tokens: Vec<u32> = (0..100u32).map(|i| (i * 13 + 5) % 270).collect();
    let p = PerplexityParams {
        ctx: 16,
        chunks: Some(3),
        bos: Some(2),
        graph: false,
    };
    let r = qd_eval::perplexity(&model, &tokens, &p, |_, _, _| {}).unwrap();
    assert_eq!(r.n_chunks, 3);
    assert_eq!(r.n_scored, 3 * 7);
    let mut nll = Vec::new();
    for c in 0..3 {
        let mut batch = tokens[c * 16..(c + 1) * 16].to_vec();
        batch[0] = 2;
        let x = Tensor::new(batch.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let l = model
            .forward(&x, None, &ForwardOpts::default())
            .unwrap()
            .logits
            .unwrap();
        let rows = l.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        for i in 8..15 {
            let row = &rows[i];
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            nll.push(lse - row[batch[i + 1] as usize] as f64);
        }
    }
    let mean = nll.iter().sum::<f64>() / nll.len() as f64;
    assert!(
        (r.ppl - mean.exp()).abs() < 1e-3 * r.ppl,
        "{} vs {}",
        r.ppl,
        mean.exp()
    );
    let var = nll.iter().map(|x| x * x).sum::<f64>() / nll.len() as f64 - mean * mean;
    let se = mean.exp() * (var / (nll.len() as f64 - 1.0)).sqrt();
    assert!((r.ppl_stderr - se).abs() < 1e-3 * se.max(1e-9));
    assert_eq!(r.running.len(), 3);
}

#[test]
fn perplexity_rejects_short_text() {
    let f = tiny(Family::Llama);
    let model = qd_model::load_dequantized(&f, &Device::Cpu).unwrap();
    let p = PerplexityParams {
        ctx: 64,
        chunks: None,
        bos: Some(2),
        graph: false,
    };
    let e = qd_eval::perplexity(&model, &[1, 2, 3], &p, |_, _, _| {}).unwrap_err();
    assert!(e.to_string().contains("at least 2×ctx"), "{e}");
}

#[test]
fn top_k_is_sorted_and_normalised() {
    let f = tiny(Family::Gemma3);
    let model = qd_model::load_quantized(&f, &Device::Cpu).unwrap();
    let pos = qd_eval::top_k(&model, &[2, 10, 20, 30], 5).unwrap();
    assert_eq!(pos.len(), 4);
    for p in &pos {
        assert_eq!(p.ids.len(), 5);
        assert!(p.logprobs.windows(2).all(|w| w[0] >= w[1]));
        assert!(p.logprobs.iter().all(|&l| l <= 0.0));
    }
}

/// The acceptance check: `eval perplexity --ctx 512 --chunks 40` on pydoc within 0.5% of
/// llama.cpp's 8.1250 (reference/perplexity.json).
#[test]
fn teacher_perplexity_matches_llama_cpp() {
    let f = GgufFile::open(qd_fixtures::teacher_path()).unwrap();
    let tok = qd_tokenizer::GgufTokenizer::from_gguf(&f).unwrap();
    let model = qd_model::load_quantized(&f, &Device::Cpu).unwrap();
    let text = std::fs::read_to_string(qd_fixtures::data_dir().join("corpora/pydoc.txt")).unwrap();
    let tokens = tok.encode(&text, true).unwrap();
    let reference = qd_fixtures::read_json("gemma3-270m/perplexity.json");
    let want = reference["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["chunks"] == 40 && r["backend"].as_str().unwrap().contains("plain"))
        .unwrap()["ppl"]
        .as_f64()
        .unwrap();
    let p = PerplexityParams {
        ctx: 512,
        chunks: Some(40),
        bos: qd_eval::chunk_bos(tok.add_bos, tok.bos, tok.add_eos).unwrap(),
        graph: false,
    };
    let r = qd_eval::perplexity(&model, &tokens, &p, |_, _, _| {}).unwrap();
    eprintln!(
        "ppl {:.4} ± {:.5} vs llama.cpp {want}; {:.1} t/s",
        r.ppl, r.ppl_stderr, r.tokens_per_second
    );
    assert_eq!(r.n_scored, 40 * 255);
    assert!(
        (r.ppl / want - 1.0).abs() <= 0.005,
        "ppl {} vs {want}",
        r.ppl
    );
}

/// The teacher's greedy continuations against llama.cpp's: fed llama.cpp's own greedy tokens
/// (the prompt through the fused prefill, then the decoder token by token), each of them is
/// our argmax too, or within 0.5 nats of it (a near tie, where quantized arithmetic may pick
/// either: measured, the largest gap is 0.13 and 123 of 128 agree); and `generate` at temperature 0
/// reproduces llama.cpp's continuation up to its first such tie.
#[test]
fn teacher_greedy_generation_matches_llama_cpp() {
    let f = GgufFile::open(qd_fixtures::teacher_path()).unwrap();
    let model = qd_model::load_quantized(&f, &Device::Cpu).unwrap();
    let reference = qd_fixtures::read_json("gemma3-270m/llama_cpp_reference.json");
    let (mut agree, mut total, mut worst) = (0, 0, 0f32);
    for (name, p) in reference["prompts"].as_object().unwrap() {
        let ids = |k: &str| -> Vec<u32> {
            p[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        };
        let (prompt, want) = (ids("tokens"), ids("greedy_tokens"));
        let mut first_tie = None;
        // At every level this CPU runs (they give the same bits; the decoder tests check that).
        for isa in qd_model::Isa::supported() {
            let mut d = qd_model::Decoder::new_at(isa, &model, prompt.len() + want.len())
                .unwrap()
                .expect("the decoder runs the teacher");
            let mut row = d.prefill(&prompt, prompt.len() - 1..prompt.len()).unwrap();
            for (i, &w) in want.iter().enumerate() {
                let (arg, max) = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(j, &v)| (j as u32, v))
                    .unwrap();
                let gap = max - row[w as usize];
                worst = worst.max(gap);
                assert!(
                    gap <= 0.5,
                    "{name} {isa:?} greedy {i}: llama.cpp's {w} is {gap} below our {arg}"
                );
                if arg == w {
                    agree += 1;
                } else if first_tie.is_none() {
                    first_tie = Some(i);
                }
                total += 1;
                row = d.step(w).unwrap().to_vec();
            }
        }
        let mut s = Sampler::new(SamplerParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        });
        let got = qd_eval::generate(&model, &prompt, want.len(), &mut s, &[], |_| {}).unwrap();
        let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        let tie = first_tie.unwrap_or(want.len());
        eprintln!("{name}: generate agrees for {same} tokens; first tie at {tie}");
        assert!(
            same >= tie,
            "{name}: generation left llama.cpp's at {same}, before a tie"
        );
    }
    eprintln!("greedy tokens: {agree} of {total} our argmax, largest gap {worst}");
    assert!(agree * 10 >= total * 9, "{agree} of {total}");
}

/// Perplexity and KL through the fused prefill equal the graph path's on a quantized model (mean
/// NLL to 1e-4: the chaos of 8-bit activations), and a model against itself has zero KL and
/// the same top token everywhere, either way.
#[test]
fn fused_and_graph_evaluation_agree() {
    for fam in [Family::Gemma3, Family::Llama, Family::Qwen2] {
        let f = tiny(fam);
        let model = qd_model::load_quantized(&f, &Device::Cpu).unwrap();
        let vocab = model.hp.vocab_size as u32;
        let tokens: Vec<u32> = (0..100u32).map(|i| (i * 13 + 5) % vocab).collect();
        let run = |graph| {
            let p = PerplexityParams {
                ctx: 16,
                chunks: Some(4),
                bos: Some(2),
                graph,
            };
            let ppl = qd_eval::perplexity(&model, &tokens, &p, |_, _, _| {}).unwrap();
            let kl = qd_eval::kl_divergence(&model, &model, &tokens, &p, |_, _, _| {}).unwrap();
            (ppl, kl)
        };
        let ((pf, kf), (pg, kg)) = (run(false), run(true));
        // Mean NLLs (the tiny model's random logits make its perplexity ~1e58).
        let (nf, ng) = (pf.ppl.ln(), pg.ppl.ln());
        assert!(
            (nf - ng).abs() <= 1e-4 * ng,
            "{fam:?}: mean NLL fused {nf} graph {ng}"
        );
        for k in [&kf, &kg] {
            assert_eq!(k.mean_kl, 0.0, "{fam:?}");
            assert_eq!(k.same_top, 1.0, "{fam:?}");
        }
    }
}
