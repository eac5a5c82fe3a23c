//! Hyper-parameters, read from GGUF metadata with llama.cpp's defaults.

use qd_gguf::GgufFile;

use crate::error::{ModelError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Gemma3,
    Llama,
    Qwen2,
}

impl Arch {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "gemma3" => Ok(Self::Gemma3),
            "llama" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            other => Err(ModelError::UnsupportedArch(other.into())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Gemma3 => "gemma3",
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
        }
    }
}

/// How RoPE rotates pairs: llama's GGUF weights are permuted for adjacent pairs ("norm"),
/// gemma3 and qwen2 rotate the two halves ("neox").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    Interleaved,
    Neox,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HParams {
    pub arch: Arch,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub value_dim: usize,
    pub n_ff: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rms_eps: f64,
    pub rope_base: f32,
    /// RoPE base of sliding-window layers (gemma3: 10 000).
    pub rope_base_swa: f32,
    /// Linear RoPE scaling factor (positions are divided by it); 1 when absent.
    pub rope_scale: f32,
    pub rope_dim: usize,
    pub rope_style: RopeStyle,
    pub sliding_window: Option<usize>,
    /// Every `swa_pattern`-th layer is global; the others use the sliding window.
    pub swa_pattern: usize,
    pub attn_scale: f64,
}

impl HParams {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch = Arch::parse(f.architecture()?)?;
        let a = arch.name();
        let k = |s: &str| format!("{a}.{s}");
        let n_embd = f.get_usize(&k("embedding_length"))?;
        let n_head = f.get_usize(&k("attention.head_count"))?;
        if n_head == 0 {
            return Err(ModelError::Config("attention.head_count is 0".into()));
        }
        let n_head_kv = f
            .opt(&k("attention.head_count_kv"), GgufFile::get_usize)?
            .unwrap_or(n_head);
        let head_dim = f
            .opt(&k("attention.key_length"), GgufFile::get_usize)?
            .unwrap_or(n_embd / n_head);
        let value_dim = f
            .opt(&k("attention.value_length"), GgufFile::get_usize)?
            .unwrap_or(head_dim);
        let vocab_size = match f.opt(&k("vocab_size"), GgufFile::get_usize)? {
            Some(v) => v,
            None => f.tensor_info("token_embd.weight")?.dims[1] as usize,
        };
        let rope_scale = match f.opt(&k("rope.scaling.type"), GgufFile::get_str)? {
            None | Some("none") => 1.0,
            Some("linear") => f
                .opt(&k("rope.scaling.factor"), GgufFile::get_f64)?
                .unwrap_or(1.0) as f32,
            Some(other) => {
                return Err(ModelError::Config(format!(
                    "unsupported rope.scaling.type {other:?}"
                )))
            }
        };
        let is_gemma = arch == Arch::Gemma3;
        let hp = Self {
            arch,
            n_layer: f.get_usize(&k("block_count"))?,
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            value_dim,
            n_ff: f.get_usize(&k("feed_forward_length"))?,
            vocab_size,
            context_length: f
                .opt(&k("context_length"), GgufFile::get_usize)?
                .unwrap_or(2048),
            rms_eps: f
                .opt(&k("attention.layer_norm_rms_epsilon"), GgufFile::get_f64)?
                .unwrap_or(1e-5),
            rope_base: f
                .opt(&k("rope.freq_base"), GgufFile::get_f64)?
                .unwrap_or(10_000.0) as f32,
            rope_base_swa: 10_000.0,
            rope_scale,
            rope_dim: f
                .opt(&k("rope.dimension_count"), GgufFile::get_usize)?
                .unwrap_or(head_dim),
            rope_style: if arch == Arch::Llama {
                RopeStyle::Interleaved
            } else {
                RopeStyle::Neox
            },
            sliding_window: if is_gemma {
                f.opt(&k("attention.sliding_window"), GgufFile::get_usize)?
            } else {
                None
            },
            swa_pattern: if is_gemma { 6 } else { 1 },
            attn_scale: 1.0 / (head_dim as f64).sqrt(),
        };
        hp.validate()?;
        Ok(hp)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.n_layer == 0 || self.n_embd == 0 || self.head_dim == 0 || self.n_ff == 0 {
            return bad(format!("zero-sized dimension in {self:?}"));
        }
        if self.n_head_kv == 0 || !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad(format!(
                "head_count {} is not a multiple of head_count_kv {}",
                self.n_head, self.n_head_kv
            ));
        }
        if self.rope_dim > self.head_dim || !self.rope_dim.is_multiple_of(2) {
            return bad(format!(
                "rope dimension {} must be even and at most head dim {}",
                self.rope_dim, self.head_dim
            ));
        }
        if self.sliding_window == Some(0) {
            return bad("sliding window of 0".into());
        }
        Ok(())
    }

    /// Whether layer `il` attends within the sliding window (llama.cpp's `set_swa_pattern`).
    pub fn is_swa(&self, il: usize) -> bool {
        self.sliding_window.is_some() && il % self.swa_pattern < self.swa_pattern - 1
    }

    pub fn layer_rope(&self, il: usize) -> (f32, f32) {
        if self.is_swa(il) {
            (self.rope_base_swa, 1.0)
        } else {
            (self.rope_base, self.rope_scale)
        }
    }
}
