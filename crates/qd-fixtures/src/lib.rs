//! Test support shared by the crates' integration tests.

pub mod tiny;

use std::path::PathBuf;

/// The repository's `tests/data` directory.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

pub fn read_json(rel: &str) -> serde_json::Value {
    let p = data_dir().join(rel);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap()
}

/// A little-endian f32 file (the quantizer reference inputs), panicking with its path.
pub fn read_f32(path: &std::path::Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Path of the real teacher, as `tools/fetch-teacher.sh` caches it (or `QAT_DISTILL_TEACHER`).
/// Panics with the command to run when it is missing: these tests must not pass vacuously.
pub fn teacher_path() -> PathBuf {
    if let Ok(p) = std::env::var("QAT_DISTILL_TEACHER") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("QAT_DISTILL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let base = std::env::var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
                });
            base.join("qat-distill")
        });
    let p = cache.join("gemma-3-270m-q4_k_m.gguf");
    assert!(
        p.is_file(),
        "teacher not found at {}; run tools/fetch-teacher.sh first",
        p.display()
    );
    p
}

/// The largest absolute value of a tensor: what tolerance checks compare.
pub fn max_abs(t: &candle_core::Tensor) -> f32 {
    t.abs()
        .and_then(|a| a.max_all())
        .and_then(|m| m.to_dtype(candle_core::DType::F32))
        .and_then(|m| m.to_scalar::<f32>())
        .expect("max |x| of a tensor")
}
