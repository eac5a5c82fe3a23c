//! Training pieces. `chunked` bounds the memory of the 262k-wide LM heads.

pub mod chunked;
