//! A model's shape as its published `config.json` states it — widths, depths, heads, KV
//! groups, vocabulary, RoPE, norms — read from a small TOML file (`models/shapes/*.toml`, the
//! Hugging Face key names), checked the way the family requires, and turned into GGUF
//! metadata and a tensor list. What [`crate::synthetic::from_shape`] makes a model of, so a
//! 7B teacher or a 1.1B student can be measured without its weights.

use serde::Deserialize;

use crate::error::{ExportError, Result};

/// llama3's RoPE frequency scaling (`rope_scaling` with `rope_type = "llama3"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RopeScaling {
    pub rope_type: String,
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// One model shape, in `config.json`'s key names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelShape {
    /// The name written as `general.name` (with "synthetic" added).
    pub name: String,
    /// Where the numbers come from (the published config), for the reader.
    #[serde(default)]
    pub source: Option<String>,
    /// llama.cpp's architecture: `llama`, `qwen2` or `gemma3`.
    pub arch: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Per-head width; `hidden_size / num_attention_heads` when absent.
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    /// Gemma 3's RoPE base of its sliding-window layers.
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    /// Gemma 3's sliding attention window.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// The tokenizer's kind: `llama` (SentencePiece with byte fallback) or `gpt2` (byte-level
    /// BPE), and for `gpt2` the pre-tokenizer (`tokenizer.ggml.pre`: `llama-bpe`, `qwen2`).
    pub tokenizer: String,
    #[serde(default)]
    pub tokenizer_pre: Option<String>,
}

/// Tokens every synthetic vocabulary starts with before its pieces: specials and byte tokens.
pub const MIN_VOCAB: usize = 512;

fn bad(key: &str, why: String) -> ExportError {
    ExportError::Invalid(format!("shape: {key}: {why}"))
}

impl ModelShape {
    /// Parses and checks a shape file's text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let s: Self = toml::from_str(text)
            .map_err(|e| ExportError::Invalid(format!("{origin}: {}", one_line(&e.to_string()))))?;
        s.validate()
            .map_err(|e| ExportError::Invalid(format!("{origin}: {e}")))?;
        Ok(s)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The checks a family's loader would make later, each naming its key.
    pub fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(bad(key, "must be positive".into()));
            }
        }
        let gemma = match self.arch.as_str() {
            "llama" | "qwen2" => false,
            "gemma3" => true,
            other => {
                return Err(bad(
                    "arch",
                    format!("{other:?} is not one of llama, qwen2, gemma3"),
                ))
            }
        };
        self.check_dims(gemma)?;
        self.check_rope_and_norm(gemma)?;
        self.check_tokenizer()
    }

    /// Heads, head size, block-multiple widths and the vocabulary's size.
    fn check_dims(&self, gemma: bool) -> Result<()> {
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(bad(
                "num_key_value_heads",
                format!(
                    "{} KV heads do not divide {} attention heads into groups",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        let hd = self.head_dim();
        if hd == 0 || !hd.is_multiple_of(2) {
            return Err(bad("head_dim", format!("{hd} must be even and positive")));
        }
        // llama and qwen2 size q and o by the width: heads × head_dim must be it.
        if !gemma && self.num_attention_heads * hd != self.hidden_size {
            return Err(bad(
                "head_dim",
                format!(
                    "num_attention_heads {} × head_dim {hd} = {} ≠ hidden_size {} ({} requires them equal)",
                    self.num_attention_heads,
                    self.num_attention_heads * hd,
                    self.hidden_size,
                    self.arch
                ),
            ));
        }
        if !self.hidden_size.is_multiple_of(32) || !self.intermediate_size.is_multiple_of(32) {
            return Err(bad(
                "hidden_size",
                "hidden_size and intermediate_size must be multiples of 32 (GGUF's block)".into(),
            ));
        }
        if self.vocab_size < MIN_VOCAB {
            return Err(bad(
                "vocab_size",
                format!("{} is below {MIN_VOCAB}", self.vocab_size),
            ));
        }
        Ok(())
    }

    /// RoPE's base, window and scaling, and the norm's epsilon.
    fn check_rope_and_norm(&self, gemma: bool) -> Result<()> {
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            return Err(bad(
                "rope_theta",
                format!("{} must be positive", self.rope_theta),
            ));
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps < 1.0) {
            return Err(bad(
                "rms_norm_eps",
                format!("{} must be in (0, 1)", self.rms_norm_eps),
            ));
        }
        if gemma != self.sliding_window.is_some() {
            return Err(bad(
                "sliding_window",
                if gemma {
                    "gemma3 needs one".into()
                } else {
                    format!("only gemma3 has one, not {}", self.arch)
                },
            ));
        }
        if let Some(r) = &self.rope_scaling {
            if r.rope_type != "llama3" {
                return Err(bad(
                    "rope_scaling.rope_type",
                    format!("{:?} is not supported (llama3 is)", r.rope_type),
                ));
            }
            if !(r.factor >= 1.0
                && r.high_freq_factor > r.low_freq_factor
                && r.low_freq_factor > 0.0)
            {
                return Err(bad(
                    "rope_scaling",
                    "needs factor ≥ 1 and high_freq_factor > low_freq_factor > 0".into(),
                ));
            }
        }
        Ok(())
    }

    /// The tokenizer's kind and pre-tokenizer are ones the loaders know.
    fn check_tokenizer(&self) -> Result<()> {
        match (self.tokenizer.as_str(), self.tokenizer_pre.as_deref()) {
            ("llama", None) => {}
            ("llama", Some(_)) => {
                return Err(bad(
                    "tokenizer_pre",
                    "only a gpt2 tokenizer has a pre-tokenizer".into(),
                ))
            }
            ("gpt2", pre) => {
                qd_tokenizer::pre_regex(pre).map_err(|e| bad("tokenizer_pre", e.to_string()))?;
            }
            (other, _) => {
                return Err(bad(
                    "tokenizer",
                    format!("{other:?} is not llama (SentencePiece) or gpt2 (byte-level BPE)"),
                ))
            }
        }
        Ok(())
    }

    /// Parameters of the model (every tensor's values, the LM head counted once when tied).
    pub fn n_params(&self) -> usize {
        self.tensors()
            .iter()
            .map(|t| t.1.iter().product::<usize>())
            .sum()
    }

    /// Every tensor's GGUF name and row-major shape, in llama.cpp's order.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (d, ff, hd) = (self.hidden_size, self.intermediate_size, self.head_dim());
        let (q, kv) = (self.num_attention_heads * hd, self.num_key_value_heads * hd);
        let mut t = vec![("token_embd.weight".to_string(), vec![self.vocab_size, d])];
        if self.rope_scaling.is_some() {
            t.push(("rope_freqs.weight".into(), vec![hd / 2]));
        }
        t.push(("output_norm.weight".into(), vec![d]));
        if !self.tie_word_embeddings {
            t.push(("output.weight".into(), vec![self.vocab_size, d]));
        }
        for il in 0..self.num_hidden_layers {
            let n = |s: &str| format!("blk.{il}.{s}");
            t.push((n("attn_norm.weight"), vec![d]));
            t.push((n("attn_q.weight"), vec![q, d]));
            t.push((n("attn_k.weight"), vec![kv, d]));
            t.push((n("attn_v.weight"), vec![kv, d]));
            t.push((n("attn_output.weight"), vec![d, q]));
            if self.arch == "qwen2" {
                t.push((n("attn_q.bias"), vec![q]));
                t.push((n("attn_k.bias"), vec![kv]));
                t.push((n("attn_v.bias"), vec![kv]));
            }
            if self.arch == "gemma3" {
                t.push((n("attn_q_norm.weight"), vec![hd]));
                t.push((n("attn_k_norm.weight"), vec![hd]));
                t.push((n("post_attention_norm.weight"), vec![d]));
                t.push((n("post_ffw_norm.weight"), vec![d]));
            }
            t.push((n("ffn_norm.weight"), vec![d]));
            t.push((n("ffn_gate.weight"), vec![ff, d]));
            t.push((n("ffn_up.weight"), vec![ff, d]));
            t.push((n("ffn_down.weight"), vec![d, ff]));
        }
        t
    }

    /// llama3's per-pair frequency divisors (`rope_freqs.weight`), as llama.cpp's converter
    /// computes them from `rope_scaling`.
    pub fn rope_factors(&self) -> Option<Vec<f32>> {
        let r = self.rope_scaling.as_ref()?;
        let dim = self.head_dim();
        let old = r.original_max_position_embeddings as f64;
        let (low_wl, high_wl) = (old / r.low_freq_factor, old / r.high_freq_factor);
        Some(
            (0..dim / 2)
                .map(|i| {
                    let freq = 1.0 / self.rope_theta.powf((2 * i) as f64 / dim as f64);
                    let wavelen = 2.0 * std::f64::consts::PI / freq;
                    let f = if wavelen < high_wl {
                        1.0
                    } else if wavelen > low_wl {
                        r.factor
                    } else {
                        let smooth = (old / wavelen - r.low_freq_factor)
                            / (r.high_freq_factor - r.low_freq_factor);
                        1.0 / ((1.0 - smooth) / r.factor + smooth)
                    };
                    f as f32
                })
                .collect(),
        )
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
