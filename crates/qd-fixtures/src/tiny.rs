//! Tiny random GGUF models of each family, written by test code so most tests need no download.

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use qd_gguf::{string_array, GgmlType, GgufWriter, TensorData, Value, ValueType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Gemma3,
    Llama,
    Qwen2,
}

impl Family {
    pub fn arch(self) -> &'static str {
        match self {
            Family::Gemma3 => "gemma3",
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TinySpec {
    pub family: Family,
    /// Type of the 2-D block weights; norms stay F32, embeddings use `embd_type`.
    pub weight_type: GgmlType,
    pub embd_type: GgmlType,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub sliding_window: usize,
    pub tied_output: bool,
    pub seed: u64,
}

impl TinySpec {
    pub fn new(family: Family, weight_type: GgmlType) -> Self {
        Self {
            family,
            weight_type,
            embd_type: GgmlType::Q8_0,
            n_layer: if family == Family::Gemma3 { 7 } else { 2 },
            n_embd: 256,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 64,
            n_ff: 512,
            sliding_window: 8,
            tied_output: family != Family::Llama,
            seed: 7,
        }
    }
}

/// The tiny vocabulary: specials, the 256 byte tokens and a few merged pieces.
pub fn tiny_vocab(family: Family) -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut tokens = vec![
        "<pad>".to_string(),
        "<eos>".into(),
        "<bos>".into(),
        "<unk>".into(),
    ];
    let mut types = vec![3, 3, 3, 2];
    if family == Family::Qwen2 {
        // gpt2 byte-level: each byte as its printable stand-in.
        for b in 0u8..=255 {
            tokens.push(byte_char(b).to_string());
            types.push(1);
        }
        for p in ["Ġt", "he", "Ġthe", "in", "Ġa"] {
            tokens.push(p.into());
            types.push(1);
        }
    } else {
        for b in 0u8..=255 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
        }
        for p in [
            "▁", "t", "h", "e", "a", "i", "n", "th", "he", "▁t", "▁th", "▁the", "in", "▁a",
        ] {
            tokens.push(p.into());
            types.push(1);
        }
    }
    tokens.push("<start_of_turn>".into());
    types.push(4);
    let scores = (0..tokens.len()).map(|i| -(i as f32)).collect();
    (tokens, scores, types)
}

/// GPT-2's byte-to-unicode map.
fn byte_char(b: u8) -> char {
    let printable = |c: u8| {
        (b'!'..=b'~').contains(&c) || (0xA1..=0xAC).contains(&c) || (0xAE..=0xFF).contains(&c)
    };
    if printable(b) {
        return b as char;
    }
    let mut n = 0u32;
    for c in 0u8..b {
        if !printable(c) {
            n += 1;
        }
    }
    char::from_u32(256 + n).unwrap()
}

fn quantize(t: &Tensor, ty: GgmlType) -> Vec<u8> {
    match ty {
        GgmlType::F32 => t
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        _ => QTensor::quantize(t, ty.to_candle())
            .unwrap()
            .data()
            .unwrap()
            .into_owned(),
    }
}

/// Writes the spec's model into GGUF bytes.
pub fn tiny_gguf(spec: &TinySpec) -> Vec<u8> {
    let (tokens, scores, types) = tiny_vocab(spec.family);
    let vocab = tokens.len();
    let mut w = GgufWriter::new();
    set_hparams(&mut w, spec);
    set_tokenizer(&mut w, spec.family, tokens, scores, types);
    let mut t = Tensors {
        w: &mut w,
        rng: StdRng::seed_from_u64(spec.seed),
    };
    let d = spec.n_embd;
    t.add(
        "token_embd.weight".into(),
        vec![vocab, d],
        spec.embd_type,
        1.0,
        0.0,
    );
    t.norm("output_norm.weight".into(), d);
    if !spec.tied_output {
        t.add(
            "output.weight".into(),
            vec![vocab, d],
            spec.weight_type,
            lin_scale(d),
            0.0,
        );
    }
    for il in 0..spec.n_layer {
        t.block(spec, il);
    }
    w.to_bytes()
}

/// The architecture's hyperparameters, as llama.cpp's loader reads them.
fn set_hparams(w: &mut GgufWriter, spec: &TinySpec) {
    let a = spec.family.arch();
    let k = |s: &str| format!("{a}.{s}");
    let u = |n: usize| Value::U32(n as u32);
    w.set("general.architecture", Value::String(a.into()));
    w.set("general.name", Value::String(format!("tiny-{a}")));
    w.set("general.alignment", Value::U32(32));
    w.set(&k("context_length"), Value::U32(256));
    w.set(&k("embedding_length"), u(spec.n_embd));
    w.set(&k("block_count"), u(spec.n_layer));
    w.set(&k("feed_forward_length"), u(spec.n_ff));
    w.set(&k("attention.head_count"), u(spec.n_head));
    w.set(&k("attention.head_count_kv"), u(spec.n_head_kv));
    w.set(&k("attention.key_length"), u(spec.head_dim));
    w.set(&k("attention.value_length"), u(spec.head_dim));
    w.set(&k("attention.layer_norm_rms_epsilon"), Value::F32(1e-6));
    let rope_base = if spec.family == Family::Gemma3 {
        1_000_000.0
    } else {
        10_000.0
    };
    w.set(&k("rope.freq_base"), Value::F32(rope_base));
    if spec.family == Family::Gemma3 {
        w.set(&k("attention.sliding_window"), u(spec.sliding_window));
    }
}

/// The tokenizer's metadata: SentencePiece-style for gemma3 and llama, GPT-2 byte-level BPE
/// (with a few merges) for qwen2.
fn set_tokenizer(
    w: &mut GgufWriter,
    family: Family,
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
) {
    let (model, pre) = if family == Family::Qwen2 {
        ("gpt2", "qwen2")
    } else {
        ("llama", "default")
    };
    w.set("tokenizer.ggml.model", Value::String(model.into()));
    w.set("tokenizer.ggml.pre", Value::String(pre.into()));
    w.set("tokenizer.ggml.tokens", string_array(tokens));
    w.set(
        "tokenizer.ggml.scores",
        Value::Array(ValueType::F32, scores.into_iter().map(Value::F32).collect()),
    );
    w.set(
        "tokenizer.ggml.token_type",
        Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()),
    );
    if family == Family::Qwen2 {
        w.set(
            "tokenizer.ggml.merges",
            string_array(["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]),
        );
    }
    w.set("tokenizer.ggml.bos_token_id", Value::U32(2));
    w.set("tokenizer.ggml.eos_token_id", Value::U32(1));
    w.set("tokenizer.ggml.unknown_token_id", Value::U32(3));
    w.set("tokenizer.ggml.padding_token_id", Value::U32(0));
    w.set(
        "tokenizer.ggml.add_bos_token",
        Value::Bool(family != Family::Qwen2),
    );
    w.set("tokenizer.ggml.add_space_prefix", Value::Bool(false));
}

/// Scale of a random linear weight with `fan_in` inputs: activations stay O(1) through the
/// blocks, so the tiny models' logits are neither flat nor saturated.
fn lin_scale(fan_in: usize) -> f32 {
    1.0 / (fan_in as f32).sqrt() * 1.7
}

/// Adds random tensors to a writer, drawing from one generator in the order they are added
/// (so a spec always gives the same bytes).
struct Tensors<'a> {
    w: &'a mut GgufWriter,
    rng: StdRng,
}

impl Tensors<'_> {
    /// A tensor of uniform values in `offset ± scale`, stored as `ty`.
    fn add(&mut self, name: String, shape: Vec<usize>, ty: GgmlType, scale: f32, offset: f32) {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| offset + scale * (self.rng.random::<f32>() * 2.0 - 1.0))
            .collect();
        let t = Tensor::from_vec(data, shape.clone(), &Device::Cpu).unwrap();
        self.w.add_tensor(TensorData {
            name,
            data: quantize(&t, ty),
            shape,
            dtype: ty,
        });
    }

    /// A norm's weight: F32 values near 1.
    fn norm(&mut self, name: String, len: usize) {
        self.add(name, vec![len], GgmlType::F32, 0.2, 1.0);
    }

    /// A small F32 bias.
    fn bias(&mut self, name: String, len: usize) {
        self.add(name, vec![len], GgmlType::F32, 0.1, 0.0);
    }

    /// Block `il`'s tensors, with the family's biases (qwen2) or extra norms (gemma3).
    fn block(&mut self, spec: &TinySpec, il: usize) {
        let n = |s: &str| format!("blk.{il}.{s}");
        let (d, ff, wt) = (spec.n_embd, spec.n_ff, spec.weight_type);
        let (q, kv) = (spec.n_head * spec.head_dim, spec.n_head_kv * spec.head_dim);
        let lin = lin_scale(d);
        self.norm(n("attn_norm.weight"), d);
        self.add(n("attn_q.weight"), vec![q, d], wt, lin, 0.0);
        self.add(n("attn_k.weight"), vec![kv, d], wt, lin, 0.0);
        self.add(n("attn_v.weight"), vec![kv, d], wt, lin, 0.0);
        self.add(n("attn_output.weight"), vec![d, q], wt, lin, 0.0);
        self.norm(n("ffn_norm.weight"), d);
        self.add(n("ffn_gate.weight"), vec![ff, d], wt, lin, 0.0);
        self.add(n("ffn_up.weight"), vec![ff, d], wt, lin, 0.0);
        self.add(n("ffn_down.weight"), vec![d, ff], wt, lin_scale(ff), 0.0);
        if spec.family == Family::Qwen2 {
            self.bias(n("attn_q.bias"), q);
            self.bias(n("attn_k.bias"), kv);
            self.bias(n("attn_v.bias"), kv);
        }
        if spec.family == Family::Gemma3 {
            self.norm(n("attn_q_norm.weight"), spec.head_dim);
            self.norm(n("attn_k_norm.weight"), spec.head_dim);
            self.norm(n("post_attention_norm.weight"), d);
            self.norm(n("post_ffw_norm.weight"), d);
        }
    }
}

/// Writes a tiny model to `dir/name` and returns its path.
pub fn write_tiny(dir: &std::path::Path, name: &str, spec: &TinySpec) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, tiny_gguf(spec)).unwrap();
    p
}

/// A training run's inputs under `dir`: a tiny Q8_0 teacher of `family` (`teacher.gguf`) and a
/// corpus of `text` repeated `times` (`corpus.txt`). Returns (teacher, corpus).
pub fn write_run_inputs(
    dir: &std::path::Path,
    family: Family,
    text: &str,
    times: usize,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let teacher = write_tiny(dir, "teacher.gguf", &TinySpec::new(family, GgmlType::Q8_0));
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, text.repeat(times)).expect("corpus written");
    (teacher, corpus)
}
