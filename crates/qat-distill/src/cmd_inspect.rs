use std::collections::BTreeMap;
use std::path::PathBuf;

use qd_model::HParams;
use serde_json::json;

use crate::loaded;

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Validate every tensor's data first, as llama.cpp's --check-tensors: finite values and
    /// block scales; the first bad tensor, row and block fail the command.
    #[arg(long)]
    check: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let f = loaded::open(&a.model)?;
    if a.check {
        f.check_tensors()?;
    }
    let hp = HParams::from_gguf(&f)?;
    let tok = loaded::tokenizer(&f)?;
    let mut per_type: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    let (mut params, mut bytes) = (0u64, 0u64);
    for t in f.tensors() {
        let e = per_type.entry(t.dtype.name()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes();
        params += t.n_elements();
        bytes += t.n_bytes();
    }
    let v = json!({
        "path": f.path(),
        "gguf_version": f.header.version,
        "architecture": hp.arch.name(),
        "name": f.get("general.name").and_then(|v| v.as_str()),
        "hparams": {
            "n_layer": hp.n_layer, "n_embd": hp.n_embd, "n_head": hp.n_head, "n_head_kv": hp.n_head_kv,
            "head_dim": hp.head_dim, "n_ff": hp.n_ff, "vocab_size": hp.vocab_size,
            "context_length": hp.context_length, "rms_eps": hp.rms_eps, "rope_base": hp.rope_base,
            "rope_base_swa": if hp.sliding_window.is_some() { Some(hp.rope_base_swa) } else { None },
            "rope_dim": hp.rope_dim, "sliding_window": hp.sliding_window,
            "swa_layers": (0..hp.n_layer).filter(|&l| hp.is_swa(l)).count(),
        },
        "params": params,
        "tensor_bytes": bytes,
        "file_bytes": f.file_size(),
        "tensors": f.tensors().len(),
        "data_checked": a.check,
        "tensors_per_type": per_type.iter().map(|(k, (n, b))| (k.to_string(), json!({"count": n, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
        "tokenizer": {
            "model": tok.model, "vocab_size": tok.vocab_size, "bos": tok.bos, "eos": tok.eos,
            "add_bos": tok.add_bos, "add_eos": tok.add_eos,
            "pre": f.get("tokenizer.ggml.pre").and_then(|v| v.as_str()),
        },
    });
    if a.json {
        println!("{v}");
        return Ok(());
    }
    println!(
        "{}  ({}, GGUF v{})",
        f.path().display(),
        hp.arch.name(),
        f.header.version
    );
    println!(
        "  layers {}  width {}  heads {}/{} kv  head dim {}  ffn {}  vocab {}",
        hp.n_layer, hp.n_embd, hp.n_head, hp.n_head_kv, hp.head_dim, hp.n_ff, hp.vocab_size
    );
    println!(
        "  rope base {} (swa {})  rope dim {}  sliding window {:?} on {} of {} layers  rms eps {}",
        hp.rope_base,
        hp.rope_base_swa,
        hp.rope_dim,
        hp.sliding_window,
        (0..hp.n_layer).filter(|&l| hp.is_swa(l)).count(),
        hp.n_layer,
        hp.rms_eps
    );
    println!(
        "  params {:.2} M  tensor bytes {:.2} MiB  file {:.2} MiB  ({:.2} bits/weight)",
        params as f64 / 1e6,
        bytes as f64 / (1 << 20) as f64,
        f.file_size() as f64 / (1 << 20) as f64,
        bytes as f64 * 8.0 / params as f64
    );
    if a.check {
        println!("  tensor data checked: every value and block scale finite");
    }
    for (k, (n, b)) in &per_type {
        println!(
            "  {k:>5}: {n:>4} tensors, {:.2} MiB",
            *b as f64 / (1 << 20) as f64
        );
    }
    println!(
        "  tokenizer: {} ({}), {} tokens, bos {:?} eos {:?}, add_bos {}",
        tok.model,
        f.get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .unwrap_or("-"),
        tok.vocab_size,
        tok.bos,
        tok.eos,
        tok.add_bos
    );
    Ok(())
}
