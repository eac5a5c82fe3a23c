use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use qd_eval::{Sampler, SamplerParams};

use crate::loaded;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// The prompt (BOS added when the model says so).
    #[arg(long, short = 'p')]
    prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long, default_value_t = 64)]
    n_predict: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temp: f32,
    /// Sample among the k most likely tokens only.
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling: the smallest set of tokens holding this probability.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where to compute: cpu (the fused decoder), cpu-generic (the graph and its KV cache, the
    /// path a GPU runs) or cuda[:N]. Sampling runs on the host.
    #[arg(long, value_parser = crate::device::parse, default_value = "cpu")]
    device: qd_model::DeviceSpec,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.temp >= 0.0, "--temp must be ≥ 0");
    anyhow::ensure!(a.top_p > 0.0 && a.top_p <= 1.0, "--top-p must be in (0, 1]");
    let dev = crate::device::open(a.device)?;
    let f = loaded::open(&a.model)?;
    let tok = loaded::tokenizer(&f)?;
    let model = loaded::model_on(&f, &dev)?;
    let prompt = tok.encode(&a.prompt, true)?;
    let mut sampler = Sampler::new(SamplerParams {
        temperature: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    });
    print!("{}", a.prompt);
    std::io::stdout().flush()?;
    let stop: Vec<u32> = tok.eos.into_iter().collect();
    // Repack the weights for the fused decoder now (kept in the model), so that the timings
    // below are the prompt's and the tokens', as llama.cpp reports them.
    let graph = a.device.generic();
    if !graph {
        qd_model::Decoder::new(&model, 1)?;
    }
    let start = Instant::now();
    let mut first: Option<Instant> = None;
    let mut produced: Vec<u32> = Vec::new();
    let mut printed = 0usize;
    let out = qd_eval::generate_on(
        &model,
        &prompt,
        a.n_predict,
        &mut sampler,
        &stop,
        graph,
        |id| {
            first.get_or_insert_with(Instant::now);
            // Decode the whole continuation so multi-byte characters split over tokens print whole.
            produced.push(id);
            if let Ok(s) = tok.decode(&produced, true) {
                if s.len() > printed && s.is_char_boundary(printed) {
                    print!("{}", &s[printed..]);
                    printed = s.len();
                    let _ = std::io::stdout().flush();
                }
            }
        },
    )?;
    let end = Instant::now();
    println!();
    // The first token comes out of the prompt's pass; each later one out of a decoding step.
    let prompt_secs = first.map_or(0.0, |f| (f - start).as_secs_f64());
    let gen_secs = first.map_or(0.0, |f| (end - f).as_secs_f64());
    eprintln!(
        "prompt: {} tokens in {:.3} s ({:.1} t/s); generation: {} tokens in {:.3} s ({:.1} t/s)",
        prompt.len(),
        prompt_secs,
        prompt.len() as f64 / prompt_secs.max(1e-9),
        out.len().saturating_sub(1),
        gen_secs,
        out.len().saturating_sub(1) as f64 / gen_secs.max(1e-9),
    );
    Ok(())
}
