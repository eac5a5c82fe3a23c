//! Named shapes (`models/shapes/*.toml`) and the synthetic models made of them: every shipped
//! shape parses and has its published parameter count; a bad shape fails naming its key; a
//! small shape of each family and tokenizer kind writes a file that loads, runs and tokenizes.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use qd_export::synthetic_vocab::synthetic_vocab;
use qd_export::{write_shape_model, ModelShape, Recipe};
use qd_gguf::{GgmlType, GgufFile};

fn shapes_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/shapes")
}

fn shipped(name: &str) -> ModelShape {
    let p = shapes_dir().join(format!("{name}.toml"));
    ModelShape::from_toml(&std::fs::read_to_string(&p).unwrap(), name).unwrap()
}

#[test]
fn shipped_shapes_have_their_published_parameter_counts() {
    // (file, parameters as the model cards round them, in billions, and the tolerance).
    for (name, billions) in [
        ("llama2-7b", 6.738),
        ("tinyllama-1.1b", 1.100),
        ("llama3.2-1b", 1.236),
        ("llama3.2-3b", 3.213),
        ("qwen2.5-0.5b", 0.494),
        ("qwen2.5-1.5b", 1.544),
        ("gemma3-270m", 0.268),
    ] {
        let s = shipped(name);
        // rope_freqs (64 values) aside, the count is the model's own.
        let got = s.n_params() as f64 / 1e9;
        assert!(
            (got - billions).abs() < 0.0015,
            "{name}: {got} B vs {billions} B"
        );
    }
    let n = std::fs::read_dir(shapes_dir()).unwrap().count();
    assert_eq!(n, 7, "a new shape file needs its row above");
}

fn small(arch: &str, tokenizer: &str, pre: Option<&str>) -> ModelShape {
    ModelShape {
        name: format!("small-{arch}"),
        source: None,
        arch: arch.into(),
        hidden_size: 128,
        intermediate_size: 256,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: if arch == "gemma3" { Some(64) } else { None },
        vocab_size: 1000,
        max_position_embeddings: 512,
        rope_theta: 10000.0,
        rope_local_base_freq: None,
        rope_scaling: None,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: arch != "llama",
        sliding_window: (arch == "gemma3").then_some(16),
        tokenizer: tokenizer.into(),
        tokenizer_pre: pre.map(str::to_string),
    }
}

#[test]
fn bad_shapes_fail_naming_the_key() {
    let text = std::fs::read_to_string(shapes_dir().join("tinyllama-1.1b.toml")).unwrap();
    for (from, to, key) in [
        (
            "num_key_value_heads = 4",
            "num_key_value_heads = 5",
            "num_key_value_heads",
        ),
        ("hidden_size = 2048", "hidden_size = 2080", "head_dim"),
        ("arch = \"llama\"", "arch = \"gpt-j\"", "arch"),
        (
            "tokenizer = \"llama\"",
            "tokenizer = \"wordpiece\"",
            "tokenizer",
        ),
        ("vocab_size = 32000", "vocab_size = 100", "vocab_size"),
        ("rms_norm_eps = 1e-5", "rms_norm_eps = 0.0", "rms_norm_eps"),
        (
            "num_hidden_layers = 22",
            "num_hidden_layers = 0",
            "num_hidden_layers",
        ),
        ("vocab_size = 32000", "vocab_sizes = 32000", "vocab_sizes"),
    ] {
        assert!(text.contains(from), "{from}");
        let e = ModelShape::from_toml(&text.replace(from, to), "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains("bad.toml"), "{to}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
    // gemma3 may have heads × head_dim ≠ width; llama may not.
    let mut g = small("gemma3", "llama", None);
    g.head_dim = Some(96);
    g.validate().unwrap();
    let mut l = small("llama", "llama", None);
    l.head_dim = Some(96);
    assert!(l.validate().unwrap_err().to_string().contains("head_dim"));
}

#[test]
fn llama3_rope_factors_follow_the_converter() {
    let f = shipped("llama3.2-1b").rope_factors().unwrap();
    assert_eq!(f.len(), 32);
    // High frequencies unscaled, low ones divided by the factor, a smooth ramp between.
    assert_eq!(f[0], 1.0);
    assert_eq!(f[31], 32.0);
    assert!(f.windows(2).all(|w| w[0] <= w[1]));
    assert!(f.iter().any(|&x| x > 1.0 && x < 32.0));
    assert!(shipped("tinyllama-1.1b").rope_factors().is_none());
}

#[test]
fn synthetic_vocabularies_have_the_exact_size_and_unique_pieces() {
    for (kind, pre, size) in [
        ("llama", None, 32000),
        ("gpt2", Some("llama-bpe"), 5000),
        ("gpt2", Some("qwen2"), 5000),
    ] {
        let v = synthetic_vocab(kind, pre, size, 0).unwrap();
        assert_eq!(v.tokens.len(), size);
        let set: std::collections::HashSet<_> = v.tokens.iter().collect();
        assert_eq!(set.len(), size, "{kind} {pre:?}: duplicated pieces");
        assert_eq!(v.scores.len(), size);
        assert_eq!(v.types.len(), size);
    }
}

#[test]
fn small_shapes_of_each_family_write_load_run_and_tokenize() {
    let d = tempfile::tempdir().unwrap();
    let mut scaled = small("llama", "gpt2", Some("llama-bpe"));
    scaled.tie_word_embeddings = true;
    scaled.rope_scaling = shipped("llama3.2-1b").rope_scaling;
    for (i, shape) in [
        small("llama", "llama", None),
        scaled,
        small("qwen2", "gpt2", Some("qwen2")),
        small("gemma3", "llama", None),
    ]
    .into_iter()
    .enumerate()
    {
        let p = d.path().join(format!("{i}.gguf"));
        let mut calls = 0;
        let r = write_shape_model(
            &shape,
            &Recipe::parse("q4_k_m").unwrap(),
            3,
            &p,
            &mut |done, total| {
                calls += 1;
                assert!(done <= total);
            },
        )
        .unwrap();
        assert_eq!(r.n_params, shape.n_params());
        assert_eq!(calls, r.n_tensors);
        // Same seed, same bytes (rows drawn in chunks, independent of threads).
        let p2 = d.path().join(format!("{i}-again.gguf"));
        write_shape_model(
            &shape,
            &Recipe::parse("q4_k_m").unwrap(),
            3,
            &p2,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&p2).unwrap());
        // Another seed: other weights, the same tokenizer (a teacher and student made apart).
        let p3 = d.path().join(format!("{i}-seed.gguf"));
        write_shape_model(
            &shape,
            &Recipe::parse("q4_k_m").unwrap(),
            4,
            &p3,
            &mut |_, _| {},
        )
        .unwrap();
        let (a, b) = (GgufFile::open(&p).unwrap(), GgufFile::open(&p3).unwrap());
        assert_eq!(
            a.get("tokenizer.ggml.tokens"),
            b.get("tokenizer.ggml.tokens")
        );
        assert_ne!(
            a.tensor_bytes("blk.0.ffn_up.weight").unwrap(),
            b.tensor_bytes("blk.0.ffn_up.weight").unwrap()
        );

        let f = GgufFile::open(&p).unwrap();
        let hp = qd_model::HParams::from_gguf(&f).unwrap();
        assert_eq!((hp.n_embd, hp.n_layer, hp.vocab_size), (128, 2, 1000));
        assert_eq!(hp.n_head_kv, 2);
        // 128-wide rows do not tile a 256-value super-block: llama.cpp's fallbacks.
        assert!(f.tensors().iter().any(|t| t.dtype != GgmlType::F32));
        let m = qd_model::load_quantized(&f, &Device::Cpu).unwrap();
        let tok = qd_tokenizer::GgufTokenizer::from_gguf(&f).unwrap();
        let text = "The quick brown fox, 42 times; naïve café.";
        let ids = tok.encode(text, true).unwrap();
        assert!(ids.len() > 5 && ids.iter().all(|&t| (t as usize) < 1000));
        assert_eq!(tok.decode(&ids, true).unwrap().trim_start(), text);
        let x = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let out = m.forward(&x, None, &Default::default()).unwrap();
        let logits = out.logits.unwrap();
        assert_eq!(logits.dims(), &[1, ids.len(), 1000]);
        let v: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| x.is_finite()));
        if i == 1 {
            assert!(f.tensor_info("rope_freqs.weight").is_ok());
        }
    }
}
