//! A distillation run: open what the config names, resume or start, then the loop — one step,
//! its log line, an evaluation and a checkpoint when due — and the summary. The order of the
//! training data is a function of (seed, step) alone, so a resumed run sees exactly the
//! batches the uninterrupted one would have.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::Device;

use super::adamw::{clip_owned_grads, AdamW, MomentFormat};
use super::batches::Data;
use super::checkpointing::{resume_from_latest, save_checkpoint, Provenance, Start};
use super::eval::{evaluate, EvalReport};
use super::memory;
use super::step::batch_loss_and_grads;
use super::students::Students;
use super::teacher::Teacher;
use crate::checkpoint::RunFiles;
use crate::loss::{Divergence, LossConfig, LossParts};
use crate::student::{vocab_map, VocabMap, STEP_SUFFIX};
use crate::teacher_cache::{SeqRef, Split};

pub use super::config::RunConfig;
pub use super::error::TrainError;
pub use super::memory::peak_rss_bytes;
use super::report::{append_log, write_summary};
pub use super::report::{Event, RunSummary};

/// What one step did: its loss parts and the schedule's values it used.
struct Stepped {
    parts: LossParts,
    lr: f64,
    alpha: f64,
    temperature: f64,
    grad_norm: f64,
}

/// An event for the log and the caller.
fn emit(log: &Path, on_event: &mut impl FnMut(&Event), ev: &Event) -> Result<(), TrainError> {
    append_log(log, ev)?;
    on_event(ev);
    Ok(())
}

/// Everything a run holds while it trains, opened from its config.
struct Session<'a> {
    cfg: &'a RunConfig,
    spec: qd_model::DeviceSpec,
    div: Divergence,
    teacher: Teacher,
    vmap: Option<VocabMap>,
    /// The student's vocabulary (the data's token ids are below it).
    vocab: u32,
    data: Data,
    files: RunFiles,
    students: Students,
    opt: AdamW,
    dev: Device,
}

impl<'a> Session<'a> {
    /// Opens the teacher, the data and the student, and sets up the optimizer.
    fn open(cfg: &'a RunConfig) -> Result<Self, TrainError> {
        let div = cfg.validate()?;
        // Loading hands freed pages back; `check_fits` decides for the steps.
        memory::keep_freed_pages(false);
        let spec = cfg.device_spec()?;
        let dev = spec.open().map_err(|e| TrainError::Config(e.to_string()))?;
        // Freed device memory stays in the pool between steps instead of being mapped afresh.
        #[cfg(feature = "cuda")]
        if let Device::Cuda(d) = &dev {
            qd_quant::cuda::keep_freed_memory(d)?;
        }
        let tf = qd_gguf::GgufFile::open(&cfg.teacher)?;
        let sf = cfg
            .student_file
            .as_ref()
            .map(qd_gguf::GgufFile::open)
            .transpose()?;
        let vmap: Option<VocabMap> = match &sf {
            Some(sf) => vocab_map(&tf, sf)?,
            None => None,
        };
        // The data in the student's tokenization (the teacher's unless it is trimmed).
        let tok = qd_tokenizer::GgufTokenizer::from_gguf(sf.as_ref().unwrap_or(&tf))?;
        memory::mark("tokenizer");
        let teacher = Teacher::open(cfg, &tf, vmap.as_ref(), &dev)?;
        memory::mark("teacher");
        let files = RunFiles::of(cfg)?;
        let data = Data::load(
            cfg,
            &tok,
            files
                .student_sha256
                .as_deref()
                .unwrap_or(&files.teacher_sha256),
        )?;
        teacher.check_cache(cfg, &tf, &files.teacher_sha256, &data.packed.hash)?;
        memory::mark("data");
        let imatrix = match &cfg.imatrix {
            Some(p) => Some((qd_export::Imatrix::open(p)?, p.as_path())),
            None => None,
        };
        // A student from its own file needs nothing more of the teacher's: unmapping it now
        // keeps its pages (4 GB for a 7B teacher) out of the peak while the student is built.
        let tf = match sf {
            Some(_) => {
                drop(tf);
                None
            }
            None => Some(tf),
        };
        let students = Students::build(
            cfg,
            tf.as_ref(),
            sf.as_ref(),
            imatrix.as_ref().map(|(m, p)| (m, *p)),
            &dev,
            spec.generic(),
        )?;
        drop(imatrix);
        memory::mark("students");
        // Everything needed is copied out of the model files by now: unmapping them takes
        // their file pages out of the resident set for the rest of the run.
        drop(tf);
        drop(sf);
        memory::mark("model files unmapped");
        students.check_fits(cfg, &spec, teacher.tile_bytes(cfg))?;
        let opt = optimizer(cfg, &students)?;
        memory::mark("optimizer state");
        Ok(Self {
            cfg,
            spec,
            div,
            teacher,
            vmap,
            vocab: tok.vocab_size as u32,
            data,
            files,
            students,
            opt,
            dev,
        })
    }

    /// Step 0, or (with `resume`) the newest intact checkpoint's step, restored.
    fn start(&mut self, resume: bool) -> Result<Start, TrainError> {
        let cfg = self.cfg;
        std::fs::create_dir_all(&cfg.out).map_err(|err| TrainError::Io {
            path: cfg.out.clone(),
            err,
        })?;
        if !resume {
            return Ok(Start::FRESH);
        }
        resume_from_latest(
            cfg,
            &self.files,
            &self.data.packed.hash,
            &self.students.store,
            &mut self.opt,
            &self.dev,
        )
    }

    /// The loss of step `step` (0-based) on its batch, then clipping and the update; the
    /// step's event. A non-finite loss or gradient norm stops the run before the update.
    fn step(
        &mut self,
        step: usize,
        params: &[candle_core::Var],
        last_ckpt: &str,
    ) -> Result<Stepped, TrainError> {
        let cfg = self.cfg;
        let progress = step as f64 / cfg.steps.max(1) as f64;
        let epoch = step * cfg.batch_size * cfg.grad_accum / self.data.packed.train.len();
        let alpha = cfg.alpha.at(progress, epoch);
        let temperature = cfg.temperature.at(progress, epoch);
        let lcfg = LossConfig {
            alpha,
            temperature,
            divergence: self.div,
            chunk: cfg.chunk,
            fused: !self.spec.generic(),
            checkpoint_blocks: cfg.checkpoint_blocks,
            // Stored whole, 8-bit moments' gradients are kept in bf16; updated block by block
            // in backward only one block's are held, so they stay f32 (the bits of the
            // whole-graph step, whose 200-step curve docs/scale.md shows).
            bf16_grads: cfg.moment_format()? == MomentFormat::Adamw8 && !cfg.update_in_backward,
        };
        let store = &self.students.store;
        if step == cfg.qat_start && cfg.snap_to_grid && !self.students.snapped {
            // QAT switches on now: the trained weights start at their grid values (see
            // `QatPlan::snap`). Deterministic, so a run resumed at this step snaps the same.
            if let Some(plan) = self.students.plan() {
                plan.snap(store)?;
            }
        }
        let indices = self.data.batch_refs(cfg, step);
        let examples = self
            .data
            .batch(cfg, step, &indices, &cfg.augment(), self.vocab);
        let refs: Vec<SeqRef> = indices
            .into_iter()
            .map(|index| SeqRef {
                split: Split::Train,
                index,
            })
            .collect();
        let non_finite = |what, value| TrainError::NonFinite {
            what,
            step: step + 1,
            value,
            last: last_ckpt.to_string(),
        };
        let student = self.students.at(cfg, step);
        let teacher = self.teacher.source(cfg.kd_top_k);
        let lr = cfg.learning_rate(step);
        let (parts, grad_norm) = if cfg.update_in_backward {
            let measured = super::update_in_backward::measure(
                student,
                params,
                &store.vars,
                &teacher,
                &examples[0],
                refs.first().copied(),
                &lcfg,
                self.vmap.as_ref(),
            )?;
            check_finite(&measured.parts, measured.grad_norm, non_finite)?;
            let (parts, grad_norm) = (measured.parts, measured.grad_norm);
            measured.update(student, params, &store.vars, &mut self.opt, lr, cfg.clip)?;
            (parts, grad_norm)
        } else {
            let (parts, mut grads) = batch_loss_and_grads(
                student,
                params,
                &teacher,
                &examples,
                &refs,
                None,
                &lcfg,
                self.vmap.as_ref(),
            )?;
            let grad_norm = clip_owned_grads(&mut grads, &store.vars, cfg.clip)?;
            memory::mark("clipped");
            check_finite(&parts, grad_norm, non_finite)?;
            self.opt.step(&grads, lr)?;
            drop(grads);
            (parts, grad_norm)
        };
        memory::mark("optimizer step");
        Ok(Stepped {
            parts,
            lr,
            alpha,
            temperature,
            grad_norm,
        })
    }

    /// The held-out report of the student as step `step` (0-based) trains it.
    fn evaluate(
        &self,
        step: usize,
        val: &[Vec<u32>],
        temperature: f64,
    ) -> Result<EvalReport, TrainError> {
        if val.is_empty() {
            return Ok(EvalReport::default());
        }
        evaluate(
            self.students.at(self.cfg, step),
            &self.teacher.source(self.cfg.kd_top_k),
            val,
            temperature,
            self.cfg.chunk,
            self.vmap.as_ref().zip(self.teacher.full_head.as_ref()),
        )
        .map_err(TrainError::from)
    }

    /// What the run's checkpoints record besides weights and moments.
    fn provenance(&self) -> Provenance<'_> {
        let hp = &self.students.student.hp;
        Provenance {
            cfg: self.cfg,
            data_hash: &self.data.packed.hash,
            files: &self.files,
            architecture: hp.arch.name().to_string(),
            n_layer: hp.n_layer,
        }
    }

    /// The event that opens the run's log.
    fn start_event(&self, start: &Start) -> Event {
        Event::Start {
            step: start.step,
            steps: self.cfg.steps,
            train_sequences: self.data.packed.train.len(),
            val_sequences: self.data.packed.val.len(),
            student_params: self.students.store.n_params(),
            qat_fallbacks: self
                .students
                .plan()
                .map(|p| p.fallbacks.clone())
                .unwrap_or_default(),
            trimmed_vocab: self
                .vmap
                .as_ref()
                .map(|m| [m.kept.len(), self.teacher.vocab_size]),
            skipped_checkpoints: start.skipped.clone(),
            resumed_from: start.checkpoint.clone(),
        }
    }
}

/// A non-finite loss, or a finite loss with a non-finite gradient norm (an overflow in
/// backward), stops the run before the update would carry it into every weight.
fn check_finite(
    parts: &LossParts,
    grad_norm: f64,
    non_finite: impl Fn(&'static str, f64) -> TrainError,
) -> Result<(), TrainError> {
    if !parts.total.is_finite() {
        return Err(non_finite("loss", parts.total));
    }
    if !grad_norm.is_finite() {
        return Err(non_finite("gradient norm", grad_norm));
    }
    Ok(())
}

/// AdamW over the student's variables in the run's moment format; learned steps move relative
/// to their size (a step is 1e-4…1e-1 depending on the tensor), at `step_lr` at the schedule's
/// peak.
fn optimizer(cfg: &RunConfig, students: &Students) -> Result<AdamW, TrainError> {
    let store = &students.store;
    let mut opt = cfg.optimizer_for(store.vars.clone())?;
    opt.relative = store
        .vars
        .keys()
        .filter(|k| k.ends_with(STEP_SUFFIX))
        .map(|k| (k.clone(), cfg.step_lr / cfg.lr.max(f64::MIN_POSITIVE)))
        .collect();
    Ok(opt)
}

/// Runs (or resumes, when `resume` and `out` holds checkpoints) the configured distillation.
pub fn run(
    cfg: &RunConfig,
    resume: bool,
    stop: &AtomicBool,
    mut on_event: impl FnMut(&Event),
) -> Result<RunSummary, TrainError> {
    if cfg.block_ap()? {
        return crate::blockwise::run(cfg, resume, stop, on_event);
    }
    let mut s = Session::open(cfg)?;
    let start = s.start(resume)?;
    let mut last_ckpt = start
        .checkpoint
        .clone()
        .unwrap_or_else(|| "none".to_string());
    let log = cfg.out.join("log.jsonl");
    let val = s.data.held_out(cfg);
    on_event(&s.start_event(&start));
    let params = s.students.store.all_vars();
    let t0 = Instant::now();
    let mut tokens = 0f64;
    let elapsed = |tokens: f64| {
        (
            start.tokens + tokens,
            start.seconds + t0.elapsed().as_secs_f64(),
        )
    };
    for step in start.step..cfg.steps {
        let st = s.step(step, &params, &last_ckpt)?;
        tokens += st.parts.tokens;
        let done = step + 1;
        let ev = Event::Step {
            step: done,
            loss: st.parts.total,
            kd: st.parts.kd,
            ce: st.parts.ce,
            lr: st.lr,
            alpha: st.alpha,
            temperature: st.temperature,
            grad_norm: st.grad_norm,
            tokens_per_second: tokens / t0.elapsed().as_secs_f64(),
        };
        emit(&log, &mut on_event, &ev)?;
        if cfg.eval_every > 0 && done % cfg.eval_every == 0 && !val.is_empty() {
            let val = s.evaluate(step, &val, st.temperature)?;
            emit(&log, &mut on_event, &Event::Eval { step: done, val })?;
        }
        let interrupted = stop.load(Ordering::SeqCst);
        if (cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0)
            || done == cfg.steps
            || interrupted
        {
            let path: PathBuf = save_checkpoint(
                &s.provenance(),
                &s.students.store,
                &s.opt,
                done,
                elapsed(tokens),
            )?;
            last_ckpt = path.display().to_string();
            on_event(&Event::Checkpoint {
                step: done,
                path: path.clone(),
            });
            if interrupted && done < cfg.steps {
                return Err(TrainError::Interrupted { step: done, path });
            }
        }
    }
    let final_val = s.evaluate(cfg.steps, &val, cfg.temperature.at(1.0, 0))?;
    let (tokens, seconds) = elapsed(tokens);
    let summary = RunSummary {
        steps: cfg.steps,
        tokens,
        seconds,
        tokens_per_second: if seconds > 0.0 { tokens / seconds } else { 0.0 },
        final_val,
        data_hash: s.data.packed.hash.clone(),
        peak_rss_bytes: peak_rss_bytes(),
    };
    write_summary(cfg, &summary)?;
    Ok(summary)
}
