//! Training: the run (`run`) over its config, students, teacher, data plan and checkpoints,
//! the memory-bounded loss (`chunked`, `step`, `recompute`) and the optimizer (`adamw`).

pub mod adamw;
pub mod adamw_inplace;
pub mod batches;
pub mod checkpointing;
pub mod chunked;
pub mod config;
pub mod error;
pub mod eval;
pub mod memory;
pub mod moments8;
pub mod recompute;
pub mod report;
pub mod run;
pub mod schedule;
pub mod step;
pub mod stochastic_round;
pub mod students;
pub mod teacher;
pub mod update_in_backward;
