//! Checkpoints, in one place: how one is written and read on disk (`files`; its tensor files
//! streamed out by `tensor_file` and read back one tensor at a time by `tensor_reader`), the
//! run state it carries (`state`), a run's series of them (`history`: write, find the newest intact,
//! resolve), whether one matches the files it is used with (`matches`), and the student
//! rebuilt from one (`rebuild`). `train --resume` and `export-gguf --checkpoint` both go
//! through here, with one error type.

pub mod error;
pub mod files;
pub mod history;
pub mod matches;
pub mod rebuild;
pub mod state;
pub mod tensor_file;
pub mod tensor_reader;

pub use error::CheckpointError;
pub use files::{checkpoint_dir, list, prune, sha256_of, Checkpoint, OpenCheckpoint};
pub use history::{latest_intact, resolve, write, Latest};
pub use matches::{check_imatrix, check_resumable, check_student_file, check_teacher, RunFiles};
pub use rebuild::{build_run_student, load_store, rebuild_student};
pub use state::RunState;
pub use tensor_reader::TensorReader;
