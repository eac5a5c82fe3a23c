//! Both tokenizer families on the tiny fixtures' vocabularies.

use qd_fixtures::tiny::{tiny_gguf, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};
use qd_tokenizer::GgufTokenizer;

fn tok(fam: Family) -> GgufTokenizer {
    let f =
        GgufFile::from_bytes("tiny.gguf", tiny_gguf(&TinySpec::new(fam, GgmlType::Q8_0))).unwrap();
    GgufTokenizer::from_gguf(&f).unwrap()
}

fn id(t: &GgufTokenizer, piece: &str) -> u32 {
    t.inner
        .token_to_id(piece)
        .unwrap_or_else(|| panic!("{piece:?} not in vocab"))
}

#[test]
fn spm_merges_by_score_and_falls_back_to_bytes() {
    let t = tok(Family::Llama);
    // " the" merges all the way to "▁the"; "x" has no piece and becomes its byte token.
    let ids = t.encode(" thex", true).unwrap();
    assert_eq!(ids, vec![2, id(&t, "▁the"), id(&t, "<0x78>")]);
    assert_eq!(t.decode(&ids, true).unwrap(), " thex");
    // Multi-byte characters fall back to one token per UTF-8 byte and decode back.
    let ids = t.encode("é", false).unwrap();
    assert_eq!(ids, vec![id(&t, "<0xC3>"), id(&t, "<0xA9>")]);
    assert_eq!(t.decode(&ids, false).unwrap(), "é");
}

#[test]
fn user_defined_tokens_split_control_tokens_do_not() {
    let t = tok(Family::Gemma3);
    let ids = t.encode("a<start_of_turn>a", false).unwrap();
    assert_eq!(
        ids,
        vec![id(&t, "a"), id(&t, "<start_of_turn>"), id(&t, "a")]
    );
    // "<eos>" in text is not parsed as the control token.
    let ids = t.encode("<eos>", false).unwrap();
    assert!(!ids.contains(&1), "{ids:?}");
}

#[test]
fn byte_level_bpe_with_merges() {
    let t = tok(Family::Qwen2);
    assert!(!t.add_bos, "the qwen2 fixture asks for no BOS");
    let ids = t.encode(" the cat", true).unwrap();
    assert_eq!(ids[0], id(&t, "Ġthe"));
    assert_eq!(t.decode(&ids, false).unwrap(), " the cat");
}

/// A `tokenizer.json` beside the model file is used instead of the GGUF vocabulary.
#[test]
fn tokenizer_json_beside_the_model_takes_precedence() {
    let d = std::env::temp_dir().join(format!("qd-tok-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let path =
        qd_fixtures::tiny::write_tiny(&d, "m.gguf", &TinySpec::new(Family::Llama, GgmlType::Q8_0));
    let from_gguf = GgufTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    // Save it without its merges, so we can tell which one was loaded.
    from_gguf
        .inner
        .save(d.join("tokenizer.json"), false)
        .unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("tokenizer.json")).unwrap()).unwrap();
    json["model"]["merges"] = serde_json::json!([]);
    std::fs::write(d.join("tokenizer.json"), json.to_string()).unwrap();
    let sidecar = GgufTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    assert_ne!(
        sidecar.encode(" the", false).unwrap(),
        from_gguf.encode(" the", false).unwrap()
    );
    assert_eq!(
        sidecar.encode("é", true).unwrap(),
        from_gguf.encode("é", true).unwrap(),
        "BOS and byte fallback as before"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// Both families count the bytes a token stands for: SentencePiece byte tokens and `▁`, gpt2
/// byte-level characters; BOS and other control tokens count nothing.
#[test]
fn token_bytes_add_up_to_the_text() {
    let text = "the thin heath — ünïcode, tabs\tand  spaces\n";
    for fam in [Family::Gemma3, Family::Qwen2] {
        let t = tok(fam);
        let ids = t.encode(text, true).unwrap();
        assert_eq!(t.text_bytes(&ids), text.len() as u64, "{fam:?}");
    }
}
