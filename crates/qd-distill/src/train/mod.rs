//! Training pieces: the memory-bounded loss (`chunked`), the optimizer and checkpoints.

pub mod adamw;
pub mod adamw_inplace;
pub mod batches;
pub mod checkpoint;
pub mod chunked;
pub mod eval;
pub mod memory;
pub mod moments8;
pub mod recompute;
pub mod run;
pub mod schedule;
pub mod state;
pub mod step;
pub mod teacher;
pub mod tensor_file;
