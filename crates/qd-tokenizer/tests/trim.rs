//! Vocabulary trimming: the corpus tokenizes identically with the trimmed vocabulary (the ids
//! mapped through the kept table), on both tokenizer families and on the real teacher's 262k
//! SentencePiece vocabulary; a trimmed vocabulary that misses a piece its merges need is caught.

use qd_fixtures::tiny::{tiny_gguf, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};
use qd_tokenizer::{trim, verify, GgufTokenizer, GgufVocab};

fn tiny(fam: Family) -> (GgufVocab, GgufTokenizer) {
    let f =
        GgufFile::from_bytes("tiny.gguf", tiny_gguf(&TinySpec::new(fam, GgmlType::Q8_0))).unwrap();
    (
        GgufVocab::from_gguf(&f).unwrap(),
        GgufTokenizer::from_gguf(&f).unwrap(),
    )
}

fn kept_pieces(t: &qd_tokenizer::Trimmed) -> Vec<&str> {
    t.vocab.tokens.iter().map(String::as_str).collect()
}

#[test]
fn the_corpus_tokenizes_the_same_with_the_trimmed_vocabulary() {
    for fam in [Family::Llama, Family::Gemma3, Family::Qwen2] {
        let (v, tok) = tiny(fam);
        let corpus = " the the tea<start_of_turn> hat";
        let t = trim(&v, &tok, corpus, &[]).unwrap();
        verify(&t, &tok, corpus).unwrap();
        assert!(t.kept.len() < v.tokens.len(), "{fam:?}: nothing trimmed");
        let kept = kept_pieces(&t);
        // Unused merged pieces go; special and fallback tokens stay, renumbered.
        assert!(!kept.contains(&"in"), "{fam:?}: {kept:?}");
        assert_eq!(t.vocab.bos.map(|i| kept[i as usize]), Some("<bos>"));
        assert_eq!(t.vocab.eos.map(|i| kept[i as usize]), Some("<eos>"));
        if fam != Family::Qwen2 {
            // The pieces "▁the" is merged through, and all 256 byte tokens.
            for p in ["▁t", "▁th", "▁the"] {
                assert!(kept.contains(&p), "{fam:?}: {p} missing");
            }
            assert_eq!(kept.iter().filter(|p| p.starts_with("<0x")).count(), 256);
            // "in" is gone: " tin" now falls outside the kept set (as bytes or smaller pieces).
            let ids = tok.encode(" tin", false).unwrap();
            assert!(t.outside(&ids) > 0, "{fam:?}");
        } else {
            assert!(kept.contains(&"Ġthe") && kept.contains(&"Ġt"));
            assert!(
                t.vocab.merges.iter().all(|m| !m.contains("in")),
                "{:?}",
                t.vocab.merges
            );
        }
    }
}

#[test]
fn a_vocabulary_missing_a_merge_step_is_caught() {
    let (v, tok) = tiny(Family::Llama);
    let corpus = " the the";
    let mut t = trim(&v, &tok, corpus, &[]).unwrap();
    // Drop "▁th", the step between "▁t" and "▁the".
    let at = t.vocab.tokens.iter().position(|p| p == "▁th").unwrap();
    t.vocab.tokens[at] = "▁th-removed".into();
    let e = verify(&t, &tok, corpus).unwrap_err().to_string();
    assert!(e.contains("tokenizes the corpus differently"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn an_empty_corpus_is_refused() {
    let (v, tok) = tiny(Family::Gemma3);
    let e = trim(&v, &tok, " \n ", &[]).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
}

/// The teacher's vocabulary trimmed on half of pydoc.txt: the same tokens on that half, a
/// fraction of the vocabulary kept (measured: 14,525 of 262,144), and the other half's tokens
/// mostly inside it.
#[test]
fn teacher_vocabulary_trimmed_on_real_text() {
    let path = qd_fixtures::teacher_path();
    let f = GgufFile::open(&path).unwrap();
    let v = GgufVocab::from_gguf(&f).unwrap();
    let tok = GgufTokenizer::from_gguf(&f).unwrap();
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/corpora/pydoc.txt"),
    )
    .unwrap();
    let cut = text.char_indices().nth(text.len() / 2).unwrap().0;
    let cut = cut + text[cut..].find('\n').unwrap() + 1;
    let (train, held_out) = text.split_at(cut);
    let t = trim(&v, &tok, train, &[]).unwrap();
    verify(&t, &tok, train).unwrap();
    let ids = tok.encode(held_out, false).unwrap();
    let outside = t.outside(&ids);
    eprintln!(
        "kept {} of {} tokens; held-out half: {} of {} tokens outside the kept set",
        t.kept.len(),
        v.tokens.len(),
        outside,
        ids.len()
    );
    assert!(t.kept.len() * 4 < v.tokens.len(), "kept {}", t.kept.len());
    // Measured: 6,281 of 126,465 (5.0 %).
    assert!(
        outside * 10 < ids.len(),
        "{outside} of {} outside",
        ids.len()
    );
}
