//! Throughput measured as `llama-bench` measures it, so the numbers compare directly:
//! `pp` = one batch of `n` random tokens (BOS first), logits for the last only; `tg` = `n`
//! single-token steps through the KV cache from an empty context, logits every step. One
//! warm-up run first, then `reps` timed runs; t/s is averaged over runs.

use std::time::Instant;

use candle_core::Tensor;
use qd_model::{Decoder, Embedding, ForwardOpts, Linear, Logits, Transformer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    /// `pp512`, `tg128` (llama-bench's names).
    pub test: String,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub samples_ns: Vec<u64>,
    /// How the test ran: `graph` (candle ops) or `fused` (the single-token decoder).
    pub path: String,
    /// The packed kernels' instruction-set level (`scalar`, `avx512`; see `qd_model::isa`).
    #[serde(default)]
    pub isa: String,
}

impl BenchResult {
    fn tokens(&self) -> f64 {
        (self.n_prompt + self.n_gen) as f64
    }

    pub fn samples_ts(&self) -> Vec<f64> {
        self.samples_ns
            .iter()
            .map(|&ns| self.tokens() * 1e9 / ns.max(1) as f64)
            .collect()
    }

    pub fn avg_ts(&self) -> f64 {
        let s = self.samples_ts();
        s.iter().sum::<f64>() / s.len().max(1) as f64
    }

    /// Sample standard deviation of t/s, as llama-bench prints after `±`.
    pub fn stddev_ts(&self) -> f64 {
        let s = self.samples_ts();
        if s.len() < 2 {
            return 0.0;
        }
        let m = self.avg_ts();
        (s.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (s.len() - 1) as f64).sqrt()
    }

    pub fn avg_ns(&self) -> f64 {
        self.samples_ns.iter().sum::<u64>() as f64 / self.samples_ns.len().max(1) as f64
    }
}

/// The level a test's kernels ran at: the decoder's, or the process's for the graph path.
fn level(decoder: Option<&Decoder>) -> String {
    decoder
        .map_or_else(qd_model::Isa::active, Decoder::isa)
        .name()
        .into()
}

fn random_tokens(n: usize, vocab: usize, bos: Option<u32>, rng: &mut StdRng) -> Vec<u32> {
    let mut t: Vec<u32> = (0..n).map(|_| rng.random_range(0..vocab as u32)).collect();
    if let (Some(b), Some(first)) = (bos, t.first_mut()) {
        *first = b;
    }
    t
}

fn prompt_once<L: Linear, E: Embedding>(
    m: &Transformer<L, E>,
    decoder: Option<&mut Decoder>,
    tokens: &[u32],
) -> Result<()> {
    if let Some(d) = decoder {
        std::hint::black_box(d.prefill(tokens, tokens.len() - 1..tokens.len())?);
        return Ok(());
    }
    let input = Tensor::new(tokens, &m.device)?.unsqueeze(0)?;
    let out = m.forward(
        &input,
        None,
        &ForwardOpts {
            logits: Logits::Last,
            hidden_states: false,
        },
    )?;
    // Wait for the result (a no-op on the CPU, a sync on CUDA).
    out.logits
        .expect("asked for logits")
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(())
}

fn gen_once<L: Linear, E: Embedding>(
    m: &Transformer<L, E>,
    decoder: Option<&mut Decoder>,
    n: usize,
    vocab: usize,
    bos: Option<u32>,
    rng: &mut StdRng,
) -> Result<()> {
    let mut token = bos.unwrap_or_else(|| rng.random_range(0..vocab as u32));
    if let Some(d) = decoder {
        d.reset();
        for _ in 0..n {
            d.step(token)?;
            token = rng.random_range(0..vocab as u32);
        }
        return Ok(());
    }
    let mut cache = m.new_cache();
    let opts = ForwardOpts {
        logits: Logits::Last,
        hidden_states: false,
    };
    for _ in 0..n {
        let input = Tensor::new(&[token], &m.device)?.unsqueeze(0)?;
        let out = m.forward(&input, Some(&mut cache), &opts)?;
        out.logits
            .expect("asked for logits")
            .flatten_all()?
            .to_vec1::<f32>()?;
        token = rng.random_range(0..vocab as u32);
    }
    Ok(())
}

/// Runs `pp{n_prompt}` (when > 0) and `tg{n_gen}` (when > 0), `reps` timed runs each.
/// Both run through [`Decoder`] where it applies, unless `graph`.
pub fn bench<L: Linear, E: Embedding>(
    m: &Transformer<L, E>,
    n_prompt: usize,
    n_gen: usize,
    reps: usize,
    bos: Option<u32>,
    seed: u64,
    graph: bool,
) -> Result<Vec<BenchResult>> {
    if reps == 0 {
        return Err(EvalError::Input("--repetitions must be at least 1".into()));
    }
    if n_prompt + n_gen > m.hp.context_length {
        return Err(EvalError::Input(format!(
            "{} tokens exceed the model's context of {}",
            n_prompt + n_gen,
            m.hp.context_length
        )));
    }
    let vocab = m.hp.vocab_size;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let fused = |n: usize| {
        if graph {
            Ok(None)
        } else {
            Decoder::new(m, n)
        }
    };
    if n_prompt > 0 {
        let mut decoder = fused(n_prompt)?;
        prompt_once(
            m,
            decoder.as_mut(),
            &random_tokens(n_prompt, vocab, bos, &mut rng),
        )?;
        let mut r = BenchResult {
            test: format!("pp{n_prompt}"),
            n_prompt,
            n_gen: 0,
            samples_ns: Vec::new(),
            path: if decoder.is_some() { "fused" } else { "graph" }.into(),
            isa: level(decoder.as_ref()),
        };
        for _ in 0..reps {
            let tokens = random_tokens(n_prompt, vocab, bos, &mut rng);
            let t0 = Instant::now();
            prompt_once(m, decoder.as_mut(), &tokens)?;
            r.samples_ns.push(t0.elapsed().as_nanos() as u64);
        }
        out.push(r);
    }
    if n_gen > 0 {
        let mut decoder = fused(n_gen)?;
        gen_once(m, decoder.as_mut(), 1, vocab, bos, &mut rng)?;
        let mut r = BenchResult {
            test: format!("tg{n_gen}"),
            n_prompt: 0,
            n_gen,
            samples_ns: Vec::new(),
            path: if decoder.is_some() { "fused" } else { "graph" }.into(),
            isa: level(decoder.as_ref()),
        };
        for _ in 0..reps {
            let t0 = Instant::now();
            gen_once(m, decoder.as_mut(), n_gen, vocab, bos, &mut rng)?;
            r.samples_ns.push(t0.elapsed().as_nanos() as u64);
        }
        out.push(r);
    }
    Ok(out)
}
