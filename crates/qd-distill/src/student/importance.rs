//! What each part of the teacher contributes, measured on calibration text: ShortGPT's block
//! influence (1 − cosine similarity of a block's input and output, per token) for depth, and
//! Minitron's activation importance for width (mean |activation| of each MLP channel, mean ‖·‖₂
//! of each attention head's output).

use candle_core::{Device, Tensor, D};
use qd_gguf::GgufFile;
use qd_model::{ForwardOpts, GgufWeights, HParams, Logits, ModelError, Transformer};

use super::probe::ProbeWeights;
use super::pruned_file::split_block;

/// Importance of every teacher block, MLP channel and attention head.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Importance {
    /// Per block: mean over tokens of 1 − cos(input, output). Small: the block changes little.
    pub block_influence: Vec<f64>,
    /// Per block, per MLP channel: mean |activation| entering `ffn_down`.
    pub ffn: Vec<Vec<f64>>,
    /// Per block, per query head: mean ‖output‖₂ of the head entering `attn_output`.
    pub heads: Vec<Vec<f64>>,
    /// Calibration tokens the statistics cover.
    pub tokens: usize,
}

/// Cuts `ids` into sequences of `seq_len` tokens (the last may be shorter, but at least 2), at
/// most `max_tokens` in all; an empty result is an error the user can act on.
pub fn calibration_sequences(
    ids: &[u32],
    seq_len: usize,
    max_tokens: usize,
) -> qd_model::Result<Vec<Vec<u32>>> {
    if seq_len < 2 {
        return Err(ModelError::Config(
            "calibration sequences need at least 2 tokens".into(),
        ));
    }
    let ids = &ids[..ids.len().min(max_tokens)];
    let seqs: Vec<Vec<u32>> = ids
        .chunks(seq_len)
        .filter(|c| c.len() >= 2)
        .map(|c| c.to_vec())
        .collect();
    if seqs.is_empty() {
        return Err(ModelError::Config(
            "the calibration corpus has no text to measure importance on".into(),
        ));
    }
    Ok(seqs)
}

/// Runs the quantized teacher over `seqs` (its own token ids) and measures importance;
/// `progress(done, total)` after each sequence.
pub fn measure(
    teacher: &GgufFile,
    seqs: &[Vec<u32>],
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> qd_model::Result<Importance> {
    let hp = HParams::from_gguf(teacher)?;
    let vocab = hp.vocab_size as u32;
    if let Some(bad) = seqs.iter().flatten().find(|&&t| t >= vocab) {
        return Err(ModelError::Config(format!(
            "calibration token id {bad} is outside the teacher's vocabulary of {vocab}"
        )));
    }
    let vd = hp.value_dim;
    let probes = ProbeWeights::new(GgufWeights::new(teacher, device), move |name: &str| {
        if name.ends_with(".ffn_down.weight") {
            Some(1)
        } else if name.ends_with(".attn_output.weight") {
            Some(vd)
        } else {
            None
        }
    });
    let mut model = Transformer::load(hp.clone(), &probes, device)?;
    model.ggml_numerics = true;
    let opts = ForwardOpts {
        logits: Logits::None,
        hidden_states: true,
    };
    let mut influence = vec![0f64; hp.n_layer];
    let mut tokens = 0usize;
    for (i, seq) in seqs.iter().enumerate() {
        let x = Tensor::new(seq.as_slice(), device)?.unsqueeze(0)?;
        let out = model.forward(&x, None, &opts)?;
        let mut input = model.embed_tokens(&x)?;
        for (l, output) in out.hidden_states.iter().enumerate() {
            let dot = (&input * output)?.sum(D::Minus1)?;
            let norms =
                (input.sqr()?.sum(D::Minus1)?.sqrt()? * output.sqr()?.sum(D::Minus1)?.sqrt()?)?;
            let cos = (dot / norms.clamp(1e-30, f64::INFINITY)?)?;
            let n = cos.elem_count() as f64;
            influence[l] += n - cos.sum_all()?.to_scalar::<f32>()? as f64;
            input = output.clone();
        }
        tokens += seq.len();
        progress(i + 1, seqs.len());
    }
    let stats = probes.collect();
    let mut ffn = vec![Vec::new(); hp.n_layer];
    let mut heads = vec![Vec::new(); hp.n_layer];
    for (name, s) in stats {
        let Some(l) = split_block(&name)
            .map(|(l, _)| l)
            .filter(|&l| l < hp.n_layer)
        else {
            continue;
        };
        if name.ends_with(".ffn_down.weight") {
            ffn[l] = s.means();
        } else {
            heads[l] = s.means();
        }
    }
    Ok(Importance {
        block_influence: influence.iter().map(|v| v / tokens.max(1) as f64).collect(),
        ffn,
        heads,
        tokens,
    })
}
