//! Corpus reading, packing and the deterministic split.

use std::path::PathBuf;

use qd_distill::data::corpus::DataError;
use qd_distill::data::pack::token_stream;
use qd_distill::data::{pack, read_documents, split_and_shuffle};
use qd_fixtures::tiny::{tiny_gguf, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};
use qd_tokenizer::GgufTokenizer;

#[test]
fn documents_from_files_and_folders_in_sorted_order() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("sub")).unwrap();
    std::fs::write(d.path().join("b.txt"), "second").unwrap();
    std::fs::write(
        d.path().join("a.jsonl"),
        "{\"text\": \"first\"}\n\n{\"text\": \"first-2\", \"id\": 3}\n",
    )
    .unwrap();
    std::fs::write(d.path().join("notes.md"), "ignored").unwrap();
    std::fs::write(d.path().join("sub/c.txt"), "third").unwrap();
    std::fs::write(d.path().join("empty.txt"), "  \n").unwrap();
    let docs = read_documents(&[d.path().to_path_buf()]).unwrap();
    assert_eq!(docs, vec!["first", "first-2", "second", "third"]);
}

#[test]
fn bad_corpora_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    assert!(matches!(
        read_documents(&[d.path().to_path_buf()]),
        Err(DataError::Empty(_))
    ));
    let bad = d.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"ok\"}\n{\"txt\": 1}\n").unwrap();
    let e = read_documents(std::slice::from_ref(&bad)).unwrap_err();
    assert!(matches!(e, DataError::Jsonl { line: 2, .. }), "{e}");
    std::fs::write(&bad, "not json\n").unwrap();
    assert!(matches!(
        read_documents(&[bad]).unwrap_err(),
        DataError::Jsonl { line: 1, .. }
    ));
    let e = read_documents(&[PathBuf::from("/nonexistent/corpus")]).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/corpus"), "{e}");
    let other = d.path().join("x.csv");
    std::fs::write(&other, "a,b").unwrap();
    assert!(matches!(
        read_documents(&[other]).unwrap_err(),
        DataError::Unsupported(_)
    ));
}

#[test]
fn stream_packing_and_split() {
    let f = GgufFile::from_bytes(
        "tiny.gguf",
        tiny_gguf(&TinySpec::new(Family::Gemma3, GgmlType::Q8_0)),
    )
    .unwrap();
    let tok = GgufTokenizer::from_gguf(&f).unwrap();
    let stream = token_stream(&tok, &["the".to_string(), " a".to_string()]).unwrap();
    let the = tok.encode("the", false).unwrap();
    let mut want = vec![2];
    want.extend(&the);
    want.push(1);
    want.push(2);
    want.extend(tok.encode(" a", false).unwrap());
    want.push(1);
    assert_eq!(stream, want, "BOS doc EOS, per document");

    let long: Vec<u32> = (0..1000).collect();
    let seqs = pack(&long, 64).unwrap();
    assert_eq!(seqs.len(), 15);
    assert!(seqs.iter().all(|s| s.len() == 64));
    assert_eq!(seqs[1][0], 64);
    assert!(matches!(
        pack(&long[..10], 64),
        Err(DataError::TooShort {
            tokens: 10,
            needed: 64
        })
    ));

    let a = split_and_shuffle(seqs.clone(), 0.2, 7);
    let b = split_and_shuffle(seqs.clone(), 0.2, 7);
    let c = split_and_shuffle(seqs.clone(), 0.2, 8);
    assert_eq!(a, b, "same seed, same split and order");
    assert_ne!(a.train, c.train);
    assert_eq!(a.train.len() + a.val.len(), 15);
    assert!(!a.val.is_empty() && !a.train.is_empty());
    let mut all: Vec<Vec<u32>> = a.train.iter().chain(&a.val).cloned().collect();
    all.sort();
    let mut orig = seqs.clone();
    orig.sort();
    assert_eq!(all, orig);
    assert_eq!(a.hash.len(), 64);
    assert_eq!(
        a.hash, c.hash,
        "the data hash does not depend on the shuffle"
    );
}

#[test]
fn token_cache_serves_reruns_and_survives_corruption() {
    use qd_distill::data::token_cache::{cached_token_stream, Source};
    let f = GgufFile::from_bytes(
        "tiny.gguf",
        tiny_gguf(&TinySpec::new(Family::Gemma3, GgmlType::Q8_0)),
    )
    .unwrap();
    let tok = GgufTokenizer::from_gguf(&f).unwrap();
    let d = tempfile::tempdir().unwrap();
    let docs = vec!["the thin heath".to_string(), "in the inn".to_string()];
    let want = token_stream(&tok, &docs).unwrap();
    let run = |docs: &[String]| cached_token_stream(&tok, "tiny", docs, Some(d.path())).unwrap();
    assert_eq!(run(&docs), (want.clone(), Source::Tokenized));
    assert_eq!(run(&docs), (want.clone(), Source::Cache));
    // Other text, or another tokenizer identity, is another entry.
    let other = vec!["the thin heath".to_string(), "in the inn!".to_string()];
    assert_eq!(run(&other).1, Source::Tokenized);
    let (_, src) = cached_token_stream(&tok, "other-teacher", &docs, Some(d.path())).unwrap();
    assert_eq!(src, Source::Tokenized);
    // A truncated entry is ignored and rewritten.
    for e in std::fs::read_dir(d.path()).unwrap() {
        let p = e.unwrap().path();
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 1]).unwrap();
    }
    assert_eq!(run(&docs), (want.clone(), Source::Tokenized));
    assert_eq!(run(&docs), (want.clone(), Source::Cache));
    // A flipped bit in an id (length intact) is caught by the ids' sha256, not trained on.
    for e in std::fs::read_dir(d.path()).unwrap() {
        let p = e.unwrap().path();
        let mut b = std::fs::read(&p).unwrap();
        let last = b.len() - 2;
        b[last] ^= 0x01;
        std::fs::write(&p, &b).unwrap();
    }
    assert_eq!(run(&docs), (want.clone(), Source::Tokenized));
    assert_eq!(run(&docs), (want, Source::Cache));
}
