//! Incremental generation with the KV cache.

use candle_core::Tensor;
use qd_model::{Decoder, Embedding, ForwardOpts, Linear, Logits, Transformer};

use crate::error::{EvalError, Result};
use crate::sampler::Sampler;

/// Generates up to `n` tokens after `prompt`, stopping at `stop` tokens; `on_token` sees each.
pub fn generate<L: Linear, E: Embedding>(
    model: &Transformer<L, E>,
    prompt: &[u32],
    n: usize,
    sampler: &mut Sampler,
    stop: &[u32],
    on_token: impl FnMut(u32),
) -> Result<Vec<u32>> {
    generate_on(model, prompt, n, sampler, stop, false, on_token)
}

/// As [`generate`]; with `graph`, through candle's graph and its KV cache even where the fused
/// decoder applies (the device-generic path; on a GPU the graph is the only path). The logits
/// of each step come to the host, where the sampler runs.
pub fn generate_on<L: Linear, E: Embedding>(
    model: &Transformer<L, E>,
    prompt: &[u32],
    n: usize,
    sampler: &mut Sampler,
    stop: &[u32],
    graph: bool,
    mut on_token: impl FnMut(u32),
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(EvalError::Input("empty prompt".into()));
    }
    if prompt.len() + n > model.hp.context_length {
        return Err(EvalError::Input(format!(
            "{} prompt + {n} generated tokens exceed the model's context of {}",
            prompt.len(),
            model.hp.context_length
        )));
    }
    let mut cache = model.new_cache();
    let opts = ForwardOpts {
        logits: Logits::Last,
        hidden_states: false,
    };
    // The prompt in one batch, then one token at a time: through the fused decoder where it
    // applies, else through the graph and its cache.
    let mut decoder = if graph {
        None
    } else {
        Decoder::new(model, prompt.len() + n)?
    };
    let mut row = match decoder.as_mut() {
        Some(d) => d.prefill(prompt, prompt.len() - 1..prompt.len())?,
        None => {
            let t = Tensor::new(prompt, &model.device)?.unsqueeze(0)?;
            let logits = model
                .forward(&t, Some(&mut cache), &opts)?
                .logits
                .expect("asked for logits");
            logits.flatten_all()?.to_vec1::<f32>()?
        }
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let next = sampler.sample(&row);
        out.push(next);
        on_token(next);
        if stop.contains(&next) || i + 1 == n {
            break;
        }
        match decoder.as_mut() {
            Some(d) => row.copy_from_slice(d.step(next)?),
            None => {
                let t = Tensor::new(&[next], &model.device)?.unsqueeze(0)?;
                let logits = model
                    .forward(&t, Some(&mut cache), &opts)?
                    .logits
                    .expect("asked for logits");
                row = logits.flatten_all()?.to_vec1::<f32>()?;
            }
        }
    }
    Ok(out)
}
