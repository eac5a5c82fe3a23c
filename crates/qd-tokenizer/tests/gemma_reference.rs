//! The real teacher's tokenizer against llama.cpp's own token ids.

use qd_gguf::GgufFile;
use qd_tokenizer::GgufTokenizer;
use sha2::{Digest, Sha256};

fn teacher_tokenizer() -> GgufTokenizer {
    let f = GgufFile::open(qd_fixtures::teacher_path()).unwrap();
    GgufTokenizer::from_gguf(&f).unwrap()
}

#[test]
fn prompts_match_llama_cpp() {
    let tok = teacher_tokenizer();
    let reference = qd_fixtures::read_json("gemma3-270m/llama_cpp_reference.json");
    for (name, p) in reference["prompts"].as_object().unwrap() {
        let text = p["text"].as_str().unwrap();
        let want: Vec<u32> = p["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, true).unwrap();
        assert_eq!(got, want, "prompt {name}");
        // Decoding the ids (BOS skipped) gives the text back.
        assert_eq!(tok.decode(&got, true).unwrap(), text, "decode {name}");
    }
}

#[test]
fn pydoc_corpus_matches_llama_cpp() {
    let tok = teacher_tokenizer();
    let meta = qd_fixtures::read_json("gemma3-270m/pydoc_tokens.json");
    let text = std::fs::read_to_string(qd_fixtures::data_dir().join("corpora/pydoc.txt")).unwrap();
    let ids = tok.encode(&text, true).unwrap();
    let first: Vec<u32> = meta["first_20"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let last: Vec<u32> = meta["last_20"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(&ids[..20], &first[..]);
    assert_eq!(&ids[ids.len() - 20..], &last[..]);
    assert_eq!(ids.len() as u64, meta["n_tokens"].as_u64().unwrap());
    let mut h = Sha256::new();
    for id in &ids {
        h.update(id.to_le_bytes());
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, meta["ids_sha256_u32le"].as_str().unwrap());
}

/// Bits per byte divides by the bytes the tokens stand for: on the whole held-out corpus (and
/// the prompts, Unicode and whitespace edge cases included) that is exactly its UTF-8 length.
#[test]
fn token_bytes_add_up_to_the_text() {
    let tok = teacher_tokenizer();
    let text = std::fs::read_to_string(qd_fixtures::data_dir().join("corpora/pydoc.txt")).unwrap();
    assert_eq!(
        tok.text_bytes(&tok.encode(&text, true).unwrap()),
        text.len() as u64
    );
    let reference = qd_fixtures::read_json("gemma3-270m/llama_cpp_reference.json");
    for (name, p) in reference["prompts"].as_object().unwrap() {
        let text = p["text"].as_str().unwrap();
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(tok.text_bytes(&ids), text.len() as u64, "prompt {name}");
    }
}
