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
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let (tokens, scores, types) = tiny_vocab(spec.family);
    let vocab = tokens.len();
    let a = spec.family.arch();
    let mut w = GgufWriter::new();
    let k = |s: &str| format!("{a}.{s}");
    w.set("general.architecture", Value::String(a.into()));
    w.set("general.name", Value::String(format!("tiny-{a}")));
    w.set("general.alignment", Value::U32(32));
    w.set(&k("context_length"), Value::U32(256));
    w.set(&k("embedding_length"), Value::U32(spec.n_embd as u32));
    w.set(&k("block_count"), Value::U32(spec.n_layer as u32));
    w.set(&k("feed_forward_length"), Value::U32(spec.n_ff as u32));
    w.set(&k("attention.head_count"), Value::U32(spec.n_head as u32));
    w.set(
        &k("attention.head_count_kv"),
        Value::U32(spec.n_head_kv as u32),
    );
    w.set(&k("attention.key_length"), Value::U32(spec.head_dim as u32));
    w.set(
        &k("attention.value_length"),
        Value::U32(spec.head_dim as u32),
    );
    w.set(&k("attention.layer_norm_rms_epsilon"), Value::F32(1e-6));
    w.set(
        &k("rope.freq_base"),
        Value::F32(if spec.family == Family::Gemma3 {
            1_000_000.0
        } else {
            10_000.0
        }),
    );
    if spec.family == Family::Gemma3 {
        w.set(
            &k("attention.sliding_window"),
            Value::U32(spec.sliding_window as u32),
        );
    }
    let (model, pre) = if spec.family == Family::Qwen2 {
        ("gpt2", "qwen2")
    } else {
        ("llama", "default")
    };
    w.set("tokenizer.ggml.model", Value::String(model.into()));
    w.set("tokenizer.ggml.pre", Value::String(pre.into()));
    w.set("tokenizer.ggml.tokens", string_array(tokens.clone()));
    w.set(
        "tokenizer.ggml.scores",
        Value::Array(ValueType::F32, scores.into_iter().map(Value::F32).collect()),
    );
    w.set(
        "tokenizer.ggml.token_type",
        Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()),
    );
    if spec.family == Family::Qwen2 {
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
        Value::Bool(spec.family != Family::Qwen2),
    );
    w.set("tokenizer.ggml.add_space_prefix", Value::Bool(false));

    let mut add = |name: String, shape: Vec<usize>, ty: GgmlType, scale: f32, offset: f32| {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| offset + scale * (rng.random::<f32>() * 2.0 - 1.0))
            .collect();
        let t = Tensor::from_vec(data, shape.clone(), &dev).unwrap();
        w.add_tensor(TensorData {
            name,
            data: quantize(&t, ty),
            shape,
            dtype: ty,
        });
    };
    let (d, hd, ff) = (spec.n_embd, spec.head_dim, spec.n_ff);
    let wt = spec.weight_type;
    let lin = 1.0 / (d as f32).sqrt() * 1.7;
    add(
        "token_embd.weight".into(),
        vec![vocab, d],
        spec.embd_type,
        1.0,
        0.0,
    );
    add(
        "output_norm.weight".into(),
        vec![d],
        GgmlType::F32,
        0.2,
        1.0,
    );
    if !spec.tied_output {
        add("output.weight".into(), vec![vocab, d], wt, lin, 0.0);
    }
    for il in 0..spec.n_layer {
        let n = |s: &str| format!("blk.{il}.{s}");
        add(n("attn_norm.weight"), vec![d], GgmlType::F32, 0.2, 1.0);
        add(n("attn_q.weight"), vec![spec.n_head * hd, d], wt, lin, 0.0);
        add(
            n("attn_k.weight"),
            vec![spec.n_head_kv * hd, d],
            wt,
            lin,
            0.0,
        );
        add(
            n("attn_v.weight"),
            vec![spec.n_head_kv * hd, d],
            wt,
            lin,
            0.0,
        );
        add(
            n("attn_output.weight"),
            vec![d, spec.n_head * hd],
            wt,
            lin,
            0.0,
        );
        add(n("ffn_norm.weight"), vec![d], GgmlType::F32, 0.2, 1.0);
        add(n("ffn_gate.weight"), vec![ff, d], wt, lin, 0.0);
        add(n("ffn_up.weight"), vec![ff, d], wt, lin, 0.0);
        add(
            n("ffn_down.weight"),
            vec![d, ff],
            wt,
            1.0 / (ff as f32).sqrt() * 1.7,
            0.0,
        );
        if spec.family == Family::Qwen2 {
            add(
                n("attn_q.bias"),
                vec![spec.n_head * hd],
                GgmlType::F32,
                0.1,
                0.0,
            );
            add(
                n("attn_k.bias"),
                vec![spec.n_head_kv * hd],
                GgmlType::F32,
                0.1,
                0.0,
            );
            add(
                n("attn_v.bias"),
                vec![spec.n_head_kv * hd],
                GgmlType::F32,
                0.1,
                0.0,
            );
        }
        if spec.family == Family::Gemma3 {
            add(n("attn_q_norm.weight"), vec![hd], GgmlType::F32, 0.2, 1.0);
            add(n("attn_k_norm.weight"), vec![hd], GgmlType::F32, 0.2, 1.0);
            add(
                n("post_attention_norm.weight"),
                vec![d],
                GgmlType::F32,
                0.2,
                1.0,
            );
            add(n("post_ffw_norm.weight"), vec![d], GgmlType::F32, 0.2, 1.0);
        }
    }
    w.to_bytes()
}

/// Writes a tiny model to `dir/name` and returns its path.
pub fn write_tiny(dir: &std::path::Path, name: &str, spec: &TinySpec) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, tiny_gguf(spec)).unwrap();
    p
}
