//! Training data: documents from text and JSONL files, tokenized with the teacher's tokenizer,
//! packed into fixed-length sequences, split and shuffled deterministically from a seed.

pub mod augment;
pub mod corpus;
pub mod mix;
pub mod pack;
pub mod token_cache;

pub use augment::{Augment, Example};
pub use corpus::{read_documents, DataError};
pub use mix::Mixture;
pub use pack::{pack, split_and_shuffle, Packed};
pub use token_cache::{cached_token_stream, default_cache_dir};
