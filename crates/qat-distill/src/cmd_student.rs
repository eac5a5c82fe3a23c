//! `student`: a smaller student GGUF cut from the teacher — blocks chosen by measured influence
//! (or by hand), MLP channels and attention heads by activation importance, the vocabulary
//! trimmed to a corpus — for `train --student-file` to distil, and for `bench`/`eval` as is.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use candle_core::Device;
use qd_distill::student::{
    calibration_sequences, measure, pruned_file,
    selection::{blocks_by_influence, heads_by_importance, top_k},
    Importance, PrunePlan,
};
use qd_gguf::GgufFile;
use qd_model::HParams;

#[derive(clap::Args)]
pub struct Args {
    /// The teacher GGUF.
    #[arg(long)]
    model: PathBuf,
    /// The student GGUF to write (atomically; an existing one needs --force).
    #[arg(long)]
    out: PathBuf,
    /// UTF-8 text the importance of blocks, channels and heads is measured on (needed by
    /// --layers, --ffn and --heads).
    #[arg(long, value_name = "TEXT")]
    calibration: Option<PathBuf>,
    /// Calibration tokens to run (in sequences of 512).
    #[arg(long, default_value_t = 8192)]
    calibration_tokens: usize,
    /// Keep this many blocks, those of highest block influence (1 − cos(input, output)) that
    /// follow the teacher's local/global attention pattern.
    #[arg(long, conflicts_with = "blocks")]
    layers: Option<usize>,
    /// Keep these teacher blocks instead, e.g. 0,3,6,9,12,17.
    #[arg(long, value_delimiter = ',')]
    blocks: Option<Vec<usize>>,
    /// MLP width: keep this many channels per block, by mean |activation|.
    #[arg(long)]
    ffn: Option<usize>,
    /// Attention heads: keep this many query heads per block (the same number per KV group),
    /// by mean ‖head output‖.
    #[arg(long)]
    heads: Option<usize>,
    /// Keep only the vocabulary this UTF-8 text uses (as export-gguf --trim-vocab); train on
    /// that text so the student's tokenization of it is the teacher's.
    #[arg(long, value_name = "CORPUS")]
    trim_vocab: Option<PathBuf>,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
}

fn read_text(p: &PathBuf, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(p)
        .with_context(|| format!("reading the {what} {}", p.display()))?;
    anyhow::ensure!(
        !text.trim().is_empty(),
        "the {what} {} is empty",
        p.display()
    );
    Ok(text)
}

/// Every target checked against the teacher before anything is measured.
fn check_targets(a: &Args, hp: &HParams) -> anyhow::Result<()> {
    let pruned = a.layers.is_some() || a.ffn.is_some() || a.heads.is_some();
    anyhow::ensure!(
        pruned || a.blocks.is_some() || a.trim_vocab.is_some(),
        "nothing to make smaller: give --layers or --blocks, --ffn, --heads, or --trim-vocab"
    );
    anyhow::ensure!(
        !pruned || a.calibration.is_some(),
        "--layers, --ffn and --heads rank by importance on calibration text: give --calibration"
    );
    if let Some(n) = a.layers {
        anyhow::ensure!(
            (1..=hp.n_layer).contains(&n),
            "--layers {n}: the teacher has {} blocks; choose 1 to {}",
            hp.n_layer,
            hp.n_layer
        );
    }
    if let Some(n) = a.ffn {
        anyhow::ensure!(
            (1..=hp.n_ff).contains(&n),
            "--ffn {n}: the teacher's MLPs have {} channels; choose 1 to {}",
            hp.n_ff,
            hp.n_ff
        );
    }
    if let Some(h) = a.heads {
        heads_by_importance(&vec![0.0; hp.n_head], hp.n_head_kv, h)?;
    }
    crate::ensure_new(&a.out, a.force)?;
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let teacher = GgufFile::open(&a.model)?;
    let hp = HParams::from_gguf(&teacher)?;
    check_targets(&a, &hp)?;
    // Trim first: a bad corpus should fail before minutes of measuring.
    let trimmed = match &a.trim_vocab {
        Some(p) => Some(qd_export::trim_vocab::trim_on(
            &teacher,
            &read_text(p, "corpus")?,
        )?),
        None => None,
    };
    let importance: Option<Importance> = match &a.calibration {
        Some(p) if a.layers.is_some() || a.ffn.is_some() || a.heads.is_some() => {
            let tok = qd_tokenizer::GgufTokenizer::from_gguf(&teacher)?;
            let ids = tok.encode(&read_text(p, "calibration text")?, false)?;
            let seqs = calibration_sequences(&ids, 512, a.calibration_tokens)?;
            let tty = std::io::stderr().is_terminal();
            let imp = measure(&teacher, &seqs, &Device::Cpu, |done, total| {
                if tty {
                    eprint!("\rmeasuring importance: {done}/{total} sequences");
                }
            })?;
            if tty {
                eprintln!();
            }
            Some(imp)
        }
        _ => None,
    };
    let blocks = match (&a.blocks, a.layers, &importance) {
        (Some(b), _, _) => b.clone(),
        (None, Some(n), Some(imp)) => blocks_by_influence(&imp.block_influence, &hp, n)?,
        _ => (0..hp.n_layer).collect(),
    };
    if let Some(&bad) = blocks.iter().find(|&&b| b >= hp.n_layer) {
        anyhow::bail!(
            "teacher block {bad} does not exist (the teacher has {} blocks)",
            hp.n_layer
        );
    }
    let per_block = |pick: &dyn Fn(usize) -> anyhow::Result<Vec<usize>>| {
        blocks
            .iter()
            .map(|&b| pick(b))
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let plan = PrunePlan {
        blocks: blocks.clone(),
        ffn: match (a.ffn, &importance) {
            (Some(n), Some(imp)) => Some(per_block(&|b| Ok(top_k(&imp.ffn[b], n)))?),
            _ => None,
        },
        heads: match (a.heads, &importance) {
            (Some(h), Some(imp)) => Some(per_block(&|b| {
                Ok(heads_by_importance(&imp.heads[b], hp.n_head_kv, h)?)
            })?),
            _ => None,
        },
    };
    let mut w = pruned_file(&teacher, &plan)?;
    if let Some(t) = &trimmed {
        qd_export::trim_vocab::apply_to_writer(&mut w, t)?;
    }
    // Load what is about to be written, so that a file the model loader refuses never lands.
    let bytes = w.to_bytes();
    let check = GgufFile::from_bytes(a.out.clone(), bytes.clone())?;
    let shp = HParams::from_gguf(&check)?;
    qd_model::load_quantized(&check, &Device::Cpu)
        .with_context(|| "the student file does not load".to_string())?;
    qd_gguf::write_atomic(&a.out, &bytes)
        .with_context(|| format!("writing {}", a.out.display()))?;
    if let Some(imp) = &importance {
        let bi: Vec<String> = imp
            .block_influence
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{i}:{v:.3}"))
            .collect();
        println!("block influence on {} tokens: {}", imp.tokens, bi.join(" "));
    }
    println!(
        "blocks {:?}; MLP {} of {} channels; heads {} of {}; vocabulary {} of {}",
        blocks, shp.n_ff, hp.n_ff, shp.n_head, hp.n_head, shp.vocab_size, hp.vocab_size
    );
    println!(
        "wrote {}: {:.1} MB ({:.1} % of the teacher's {:.1} MB)",
        a.out.display(),
        bytes.len() as f64 / 1e6,
        100.0 * bytes.len() as f64 / teacher.file_size() as f64,
        teacher.file_size() as f64 / 1e6
    );
    Ok(())
}
