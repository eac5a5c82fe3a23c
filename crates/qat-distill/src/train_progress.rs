//! What `train` shows while it runs: a progress bar on a terminal, plain lines otherwise (one per
//! twentieth of the run), and a line for each event worth reading — the start, evaluations,
//! finished blocks of a block-wise run, checkpoints (with the loss curve redrawn beside them).

use std::cell::Cell;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use qd_distill::train::run::{Event, RunConfig, TrainError};

pub struct Progress<'a> {
    cfg: &'a RunConfig,
    bar: ProgressBar,
    tty: bool,
    /// The run's own step count (a block-wise run's is steps per block × blocks).
    total: Cell<usize>,
    block_ap: bool,
}

impl<'a> Progress<'a> {
    pub fn new(cfg: &'a RunConfig) -> Result<Self, TrainError> {
        let bar = ProgressBar::new(cfg.steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  eta {eta}")
                .expect("static template"),
        );
        Ok(Self {
            cfg,
            bar,
            // Without a terminal the bar is hidden (and so is its println): plain lines instead.
            tty: std::io::stderr().is_terminal(),
            total: Cell::new(cfg.steps),
            block_ap: cfg.block_ap()?,
        })
    }

    fn say(&self, line: String) {
        if self.tty {
            self.bar.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    pub fn on(&self, ev: &Event) {
        match ev {
            Event::Start { .. } => self.start(ev),
            Event::Step {
                step,
                loss,
                kd,
                ce,
                tokens_per_second,
                ..
            } => {
                let msg = if self.block_ap {
                    format!("block MSE {loss:.4e}  {tokens_per_second:.1} tok/s")
                } else {
                    format!("loss {loss:.4} (kd {kd:.4} ce {ce:.4})  {tokens_per_second:.0} tok/s")
                };
                self.bar.set_position(*step as u64);
                let total = self.total.get();
                if !self.tty && (step % (total / 20).max(1) == 0 || *step == total) {
                    eprintln!("step {step}/{total}: {msg}");
                }
                self.bar.set_message(msg);
            }
            Event::Eval { step, val } => self.say(format!(
                "step {step}: held-out ppl {:.3}, KL to teacher {:.4}{}",
                val.ppl,
                val.kd,
                if self.cfg.student_file.is_some() {
                    format!(
                        ", teacher mass outside the student's vocabulary {:.5} per token",
                        val.teacher_mass_dropped
                    )
                } else {
                    String::new()
                }
            )),
            Event::Block {
                block,
                blocks,
                report,
            } => self.say(format!(
                "block {}/{blocks}: held-out MSE to the teacher block {:.4e} on the grid -> \
                 {:.4e} trained ({:.0} s)",
                block + 1,
                report.val_mse_before,
                report.val_mse_after,
                report.seconds
            )),
            Event::Checkpoint { path, .. } => {
                self.say(format!("checkpoint {}", path.display()));
                // The curve is a convenience: failing to draw it never stops training.
                let out = &self.cfg.out;
                if let Err(e) = crate::plot::plot_log(&out.join("log.jsonl"), &out.join("loss.png"))
                {
                    self.say(format!("note: could not draw loss.png: {e:#}"));
                }
            }
        }
    }

    fn start(&self, ev: &Event) {
        let Event::Start {
            step,
            steps,
            train_sequences,
            val_sequences,
            student_params,
            qat_fallbacks,
            trimmed_vocab,
            skipped_checkpoints,
            resumed_from,
        } = ev
        else {
            return;
        };
        self.total.set(*steps);
        self.bar.set_length(*steps as u64);
        self.bar.set_position(*step as u64);
        for line in skipped_checkpoints {
            self.say(format!(
                "warning: {line}; resuming from {} instead",
                resumed_from.as_deref().unwrap_or("the start")
            ));
        }
        for line in qat_fallbacks {
            self.say(format!("qat: {line}"));
        }
        if let Some([s, t]) = trimmed_vocab {
            self.say(format!(
                "student vocabulary {s} of the teacher's {t} tokens: the teacher's distribution \
                 is restricted to them"
            ));
        }
        self.say(format!(
            "student {:.1} M params; {train_sequences} training and {val_sequences} validation \
             sequences of {} tokens",
            *student_params as f64 / 1e6,
            self.cfg.seq_len
        ));
    }
}
