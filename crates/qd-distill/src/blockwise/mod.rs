//! Block-wise QAT (`schedule = "block-ap"`): EfficientQAT's Block-AP (Chen et al., 2024) for a
//! whole-model QAT student. Each block of the teacher is trained in turn, on the recipe's grid,
//! to reproduce the teacher block's output from the input the already-trained student blocks
//! give it (`streams`), then shipped in its final blocks (`shipped`) and written to disk
//! (`block_files`), so that memory is bounded by one block's training state plus the teacher
//! and the cached hidden states — a Llama-3.2-3B-shaped model trains within 24 GB, where its
//! end-to-end QAT would need about 50 GB. The result is a GGUF (`output`), evaluated against
//! the teacher on held-out text as an end-to-end run's final evaluation is.
//!
//! What Block-AP does here and what it leaves: the weights are trained (the fake-quant grid
//! follows them); the step sizes are not learned, and EfficientQAT's second phase (E2E-QP) is
//! an ordinary end-to-end run started from this file (`student_file`), which the embeddings
//! and LM head (kept as the teacher's, written in the recipe's types) do not see.

pub mod block_files;
pub mod one_block;
pub mod output;
pub mod shipped;
pub mod streams;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use qd_export::ModelInfo;
use qd_gguf::Value;

use crate::checkpoint::RunFiles;
use crate::train::batches::Data;
use crate::train::config::RunConfig;
use crate::train::error::TrainError;
use crate::train::eval::evaluate;
use crate::train::memory::{self, peak_rss_bytes};
use crate::train::report::{append_log, write_summary, Event, RunSummary};
use crate::train::step::TeacherSource;
use block_files::Identity;
use one_block::BlockTrainer;
use shipped::ShippedBlock;
use streams::Streams;

/// The file a block-wise run writes in its output directory.
pub const MODEL_FILE: &str = "model.gguf";

fn emit(log: &Path, on_event: &mut impl FnMut(&Event), ev: &Event) -> Result<(), TrainError> {
    append_log(log, ev)?;
    on_event(ev);
    Ok(())
}

/// What a finished block must have been trained with to be reused on resume.
fn identity(cfg: &RunConfig, teacher_sha256: &str, data_hash: &str) -> Identity {
    let mut config = serde_json::to_value(cfg).expect("serialisable");
    if let Some(o) = config.as_object_mut() {
        for k in ["out", "eval_every", "checkpoint_every", "keep", "device"] {
            o.remove(k);
        }
    }
    Identity {
        teacher_sha256: teacher_sha256.to_string(),
        data_hash: data_hash.to_string(),
        config,
    }
}

/// What a block-wise run opens before its first block: the teacher (kept quantized), its
/// shape, the run's sequences and where its blocks go.
struct Opened {
    recipe: qd_export::Recipe,
    dev: candle_core::Device,
    portable: bool,
    teacher: qd_model::QModel,
    hp: qd_model::HParams,
    block_params: usize,
    train: Vec<Vec<u32>>,
    val: Vec<Vec<u32>>,
    data_hash: String,
    id: Identity,
}

impl Opened {
    fn open(cfg: &RunConfig) -> Result<Self, TrainError> {
        cfg.validate()?;
        let recipe = cfg
            .recipe()?
            .ok_or_else(|| TrainError::Config("schedule block-ap needs a recipe (--qat)".into()))?;
        memory::keep_freed_pages(false);
        let spec = cfg.device_spec()?;
        let dev = spec.open().map_err(|e| TrainError::Config(e.to_string()))?;
        let tf = qd_gguf::GgufFile::open(&cfg.teacher)?;
        let tok = qd_tokenizer::GgufTokenizer::from_gguf(&tf)?;
        let mut teacher = qd_model::load_quantized(&tf, &dev)?;
        if cfg.teacher_stored_blocks {
            teacher.read_stored_blocks();
        }
        memory::mark("teacher");
        let block_params: usize = tf
            .tensors()
            .iter()
            .filter(|t| t.name.starts_with("blk."))
            .map(|t| t.shape().iter().product::<usize>())
            .sum();
        // Each block's tensors are read from the file when it is trained, the rest when the
        // result is written: unmapped until then, its pages are not in the resident set.
        drop(tf);
        let files = RunFiles::of(cfg)?;
        let data = Data::load(cfg, &tok, &files.teacher_sha256)?;
        let n_train = cfg.block_sequences.min(data.packed.train.len());
        let train = (0..n_train)
            .map(|k| data.packed.train[data.batch_refs(cfg, k)[0]].clone())
            .collect();
        let val = data
            .packed
            .val
            .iter()
            .take(cfg.eval_sequences)
            .cloned()
            .collect();
        Ok(Self {
            recipe,
            portable: spec.generic(),
            hp: teacher.hp.clone(),
            teacher,
            block_params,
            train,
            val,
            id: identity(cfg, &files.teacher_sha256, &data.packed.hash),
            data_hash: data.packed.hash,
            dev,
        })
    }
}

/// The tokens `trained_steps` block steps trained, as an end-to-end run counts them: each
/// token once through every block.
fn tokens(cfg: &RunConfig, o: &Opened, trained_steps: usize) -> f64 {
    (trained_steps * cfg.seq_len) as f64 / o.hp.n_layer as f64
}

/// Runs (or, with `resume`, goes on with) the block-wise QAT `cfg` describes.
pub fn run(
    cfg: &RunConfig,
    resume: bool,
    stop: &AtomicBool,
    mut on_event: impl FnMut(&Event),
) -> Result<RunSummary, TrainError> {
    let o = Opened::open(cfg)?;
    if !resume {
        block_files::clear(&cfg.out.join("blocks"))?;
    }
    std::fs::create_dir_all(&cfg.out).map_err(|err| TrainError::Io {
        path: cfg.out.clone(),
        err,
    })?;
    on_event(&Event::Start {
        step: 0,
        steps: cfg.steps * o.hp.n_layer,
        train_sequences: o.train.len(),
        val_sequences: o.val.len(),
        student_params: o.block_params,
        qat_fallbacks: Vec::new(),
        trimmed_vocab: None,
        skipped_checkpoints: Vec::new(),
        resumed_from: None,
    });
    let t0 = Instant::now();
    let (shipped, trained_steps) = train_blocks(cfg, &o, resume, stop, &mut on_event)?;
    let seconds = t0.elapsed().as_secs_f64();
    finish(cfg, &o, shipped, (trained_steps, seconds), &mut on_event)
}

/// Every block in turn: trained (or, resuming, read back), saved, and the student's stream
/// moved on through it. Returns the blocks and how many optimizer steps this process ran.
fn train_blocks(
    cfg: &RunConfig,
    o: &Opened,
    resume: bool,
    stop: &AtomicBool,
    on_event: &mut impl FnMut(&Event),
) -> Result<(Vec<ShippedBlock>, usize), TrainError> {
    let mut streams = Streams::embed(&o.teacher, &o.train, &o.val, &o.dev)?;
    let bc = o.teacher.block_context(cfg.seq_len, 0, false)?;
    memory::mark("cached hidden states");
    let (dir, log) = (cfg.out.join("blocks"), cfg.out.join("log.jsonl"));
    let trainer = BlockTrainer {
        cfg,
        teacher: &o.teacher,
        file: &cfg.teacher,
        recipe: o.recipe,
        model: ModelInfo {
            n_layer: o.hp.n_layer,
            n_gqa: o.hp.n_head / o.hp.n_head_kv.max(1),
            imatrix: false,
        },
        bc: &bc,
        dev: &o.dev,
        portable: o.portable,
    };
    let t0 = Instant::now();
    let mut shipped: Vec<ShippedBlock> = Vec::with_capacity(o.hp.n_layer);
    let mut trained_steps = 0usize;
    for il in 0..o.hp.n_layer {
        streams.advance_teacher(&o.teacher, il, &bc)?;
        let saved = match resume {
            true => block_files::load(&dir, il, &o.id)?,
            false => None,
        };
        let b = match saved {
            Some(b) => b,
            None => {
                let base = il * cfg.steps;
                let b = trainer.train(il, &streams, |s| {
                    trained_steps += 1;
                    let tokens = tokens(cfg, o, trained_steps);
                    let ev = Event::Step {
                        step: base + s.step,
                        loss: s.mse,
                        kd: 0.0,
                        ce: 0.0,
                        lr: s.lr,
                        alpha: 0.0,
                        temperature: 0.0,
                        grad_norm: s.grad_norm,
                        tokens_per_second: tokens / t0.elapsed().as_secs_f64(),
                    };
                    emit(&log, on_event, &ev)
                })?;
                memory::mark(&format!("block {il} trained"));
                let path = block_files::save(&dir, &b, &o.id)?;
                on_event(&Event::Checkpoint {
                    step: (il + 1) * cfg.steps,
                    path,
                });
                b
            }
        };
        let ev = Event::Block {
            block: il,
            blocks: o.hp.n_layer,
            report: b.report,
        };
        emit(&log, on_event, &ev)?;
        streams.advance_student(&o.teacher, il, &b.block(&o.hp, &o.dev)?, &bc)?;
        shipped.push(b);
        if stop.load(Ordering::SeqCst) && il + 1 < o.hp.n_layer {
            return Err(TrainError::Interrupted {
                step: (il + 1) * cfg.steps,
                path: dir,
            });
        }
    }
    Ok((shipped, trained_steps))
}

/// The GGUF of `shipped`, its held-out figures against the teacher, and the run's summary.
fn finish(
    cfg: &RunConfig,
    o: &Opened,
    shipped: Vec<ShippedBlock>,
    (trained_steps, seconds): (usize, f64),
    on_event: &mut impl FnMut(&Event),
) -> Result<RunSummary, TrainError> {
    let path = cfg.out.join(MODEL_FILE);
    let extra = vec![(
        "qat_distill.schedule".to_string(),
        Value::String("block-ap".into()),
    )];
    let tf = qd_gguf::GgufFile::open(&cfg.teacher)?;
    output::write_model(&tf, &shipped, o.recipe, &path, extra)?;
    drop((tf, shipped));
    memory::mark("model written");
    let steps = cfg.steps * o.hp.n_layer;
    on_event(&Event::Checkpoint {
        step: steps,
        path: path.clone(),
    });
    let sf = qd_gguf::GgufFile::open(&path)?;
    let mut student = qd_model::load_quantized(&sf, &o.dev)?;
    drop(sf);
    if cfg.teacher_stored_blocks {
        student.read_stored_blocks();
    }
    let source = TeacherSource::Model {
        model: &o.teacher,
        top_k: None,
    };
    // The KL to the teacher's own distribution (Block-AP has no temperature).
    let final_val = evaluate(&student, &source, &o.val, 1.0, cfg.chunk, None)?;
    memory::mark("evaluated");
    let tokens = tokens(cfg, o, trained_steps);
    let summary = RunSummary {
        steps,
        tokens,
        seconds,
        tokens_per_second: if seconds > 0.0 { tokens / seconds } else { 0.0 },
        final_val,
        data_hash: o.data_hash.clone(),
        peak_rss_bytes: peak_rss_bytes(),
    };
    let ev = Event::Eval {
        step: steps,
        val: final_val,
    };
    emit(&cfg.out.join("log.jsonl"), on_event, &ev)?;
    write_summary(cfg, &summary)?;
    Ok(summary)
}
