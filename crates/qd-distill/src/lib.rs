//! Distillation from a GGUF teacher. This crate starts with the losses; students, data and the
//! training loop build on them.

pub mod blockwise;
pub mod checkpoint;
pub mod data;
pub mod export;
pub mod loss;
pub mod student;
pub mod teacher_cache;
pub mod train;
