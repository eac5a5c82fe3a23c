//! A student from a config: the teacher's width, embeddings and tokenizer, its own depth and
//! (optionally) MLP width and heads, block weights drawn at random. Presets live in `models/`.

use candle_core::{Device, Tensor};
use qd_gguf::GgufFile;
use qd_model::{HParams, ModelError, Transformer};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::var_store::VarStore;
use super::Student;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentConfig {
    pub n_layer: usize,
    /// MLP width (default: the teacher's).
    pub n_ff: Option<usize>,
    pub n_head: Option<usize>,
    pub n_head_kv: Option<usize>,
    pub head_dim: Option<usize>,
    /// Standard deviation of the random block weights.
    #[serde(default = "default_std")]
    pub init_std: f64,
    #[serde(default)]
    pub seed: u64,
}

fn default_std() -> f64 {
    0.02
}

impl StudentConfig {
    /// The student's hyper-parameters: the teacher's, with this config's changes.
    pub fn hparams(&self, teacher: &HParams) -> qd_model::Result<HParams> {
        let mut hp = teacher.clone();
        hp.n_layer = self.n_layer;
        hp.n_ff = self.n_ff.unwrap_or(hp.n_ff);
        hp.n_head = self.n_head.unwrap_or(hp.n_head);
        hp.n_head_kv = self.n_head_kv.unwrap_or(hp.n_head_kv);
        if let Some(d) = self.head_dim {
            hp.head_dim = d;
            hp.value_dim = d;
            hp.rope_dim = d;
            hp.attn_scale = 1.0 / (d as f64).sqrt();
        }
        if !(self.init_std > 0.0 && self.init_std.is_finite()) {
            return Err(ModelError::Config(format!(
                "init_std must be positive, got {}",
                self.init_std
            )));
        }
        hp.validate()?;
        Ok(hp)
    }
}

/// Builds the student described by `cfg` over `teacher`'s embeddings and final norm.
pub fn student_from_config(
    teacher: &GgufFile,
    cfg: &StudentConfig,
    frozen: &[&str],
    device: &Device,
) -> qd_model::Result<(Student, VarStore)> {
    let thp = HParams::from_gguf(teacher)?;
    let hp = cfg.hparams(&thp)?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let std = cfg.init_std;
    let mut normal = move || qd_export::synthetic::normal(&mut rng, std);
    let mut store = VarStore::default();
    let mut random = |store: &mut VarStore, name: String, rows: usize, cols: usize| {
        let v: Vec<f32> = (0..rows * cols).map(|_| normal()).collect();
        store.insert(name, &Tensor::from_vec(v, (rows, cols), device)?)
    };
    let (d, hd, vd) = (hp.n_embd, hp.head_dim, hp.value_dim);
    for il in 0..hp.n_layer {
        let n = |s: &str| format!("blk.{il}.{s}");
        random(&mut store, n("attn_q.weight"), hp.n_head * hd, d)?;
        random(&mut store, n("attn_k.weight"), hp.n_head_kv * hd, d)?;
        random(&mut store, n("attn_v.weight"), hp.n_head_kv * vd, d)?;
        random(&mut store, n("attn_output.weight"), d, hp.n_head * vd)?;
        random(&mut store, n("ffn_gate.weight"), hp.n_ff, d)?;
        random(&mut store, n("ffn_up.weight"), hp.n_ff, d)?;
        random(&mut store, n("ffn_down.weight"), d, hp.n_ff)?;
        // Norm weights as the teacher stores them (GGUF's convention, gemma3's `+1` included),
        // taken from its first block so the student starts with the teacher's scale.
        for norm in [
            "attn_norm.weight",
            "ffn_norm.weight",
            "post_attention_norm.weight",
            "post_ffw_norm.weight",
        ] {
            let src = format!("blk.0.{norm}");
            if teacher.has_tensor(&src) {
                store.insert(n(norm), &teacher.dequantize(&src, device)?)?;
            }
        }
        for norm in ["attn_q_norm.weight", "attn_k_norm.weight"] {
            let src = format!("blk.0.{norm}");
            if teacher.has_tensor(&src) {
                let t = teacher.dequantize(&src, device)?;
                let t = if t.dim(0)? == hd {
                    t
                } else {
                    Tensor::ones(hd, t.dtype(), device)?
                };
                store.insert(n(norm), &t)?;
            }
        }
    }
    for name in ["token_embd.weight", "output.weight", "output_norm.weight"] {
        if teacher.has_tensor(name) {
            store.insert_from_teacher(teacher, name, name.to_string(), frozen, device)?;
        }
    }
    for name in frozen {
        store.freeze(name);
    }
    let model = Transformer::load(hp, &store, device)?;
    Ok((model, store))
}
