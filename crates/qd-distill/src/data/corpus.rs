//! Documents from files and folders: `.txt` files are one document each, `.jsonl` files one per
//! line (its `text` field). Folders are walked recursively in sorted order, so the corpus — and
//! everything derived from it — is the same on every machine.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}:{line}: {problem}")]
    Jsonl {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("{0}: not a .txt or .jsonl file")]
    Unsupported(PathBuf),
    #[error("the corpus is empty (no documents with text in {0})")]
    Empty(String),
    #[error("the corpus has {tokens} tokens, fewer than one sequence of {needed}")]
    TooShort { tokens: usize, needed: usize },
    #[error("tokenizing: {0}")]
    Tokenizer(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |err| DataError::Io {
        path: path.to_path_buf(),
        err,
    }
}

fn collect_files(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let meta = std::fs::metadata(p).map_err(io(p))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(io(p))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io(p))?;
        entries.sort();
        for e in entries {
            let ext = e.extension().and_then(|x| x.to_str()).unwrap_or("");
            if e.is_dir() || ext == "txt" || ext == "jsonl" {
                collect_files(&e, out)?;
            }
        }
    } else {
        out.push(p.to_path_buf());
    }
    Ok(())
}

/// All documents under `paths`, in a deterministic order.
pub fn read_documents(paths: &[PathBuf]) -> Result<Vec<String>, DataError> {
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files)?;
    }
    let mut docs = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(io(f))?;
        match f.extension().and_then(|x| x.to_str()) {
            Some("txt") => docs.push(text),
            Some("jsonl") => {
                for (i, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let v: serde_json::Value =
                        serde_json::from_str(line).map_err(|e| DataError::Jsonl {
                            path: f.clone(),
                            line: i + 1,
                            problem: e.to_string(),
                        })?;
                    let t =
                        v.get("text")
                            .and_then(|t| t.as_str())
                            .ok_or_else(|| DataError::Jsonl {
                                path: f.clone(),
                                line: i + 1,
                                problem: "no string field \"text\"".into(),
                            })?;
                    docs.push(t.to_string());
                }
            }
            _ => return Err(DataError::Unsupported(f.clone())),
        }
    }
    docs.retain(|d| !d.trim().is_empty());
    if docs.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(DataError::Empty(names.join(", ")));
    }
    Ok(docs)
}
