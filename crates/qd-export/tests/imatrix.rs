//! Importance matrices: llama.cpp's file read and written back, hostile or mismatched files
//! refused in one line, and `export-gguf --imatrix` on the real teacher byte-identical with
//! `llama-quantize --imatrix` (per-tensor sha256 of its output, tests/data/gemma3-270m).

use std::path::Path;

use qd_export::imatrix::{Entry, Imatrix};
use qd_export::{requantize, ExportError, Recipe, WithImatrix};
use qd_fixtures::tiny::{write_tiny, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};
use sha2::{Digest, Sha256};

fn llama_imatrix_path() -> std::path::PathBuf {
    qd_fixtures::data_dir().join("gemma3-270m/pydoc4.imatrix.gguf")
}

fn msg<T>(r: qd_export::Result<T>) -> String {
    let Err(e) = r else { panic!("should fail") };
    let s = e.to_string();
    assert!(!s.contains('\n'), "one line: {s}");
    s
}

#[test]
fn llama_cpps_file_reads_and_round_trips() {
    let path = llama_imatrix_path();
    let im = Imatrix::open(&path).unwrap();
    // 18 blocks × 7 matrices; every token of 4 chunks of 512 counted.
    assert_eq!(im.entries.len(), 18 * 7);
    assert_eq!((im.chunk_count, im.chunk_size), (4, 512));
    assert_eq!(
        im.datasets,
        vec!["tests/data/corpora/pydoc.txt".to_string()]
    );
    let e = &im.entries["blk.0.ffn_down.weight"];
    assert_eq!((e.width(), e.counts.clone()), (2048, vec![2048.0]));
    let w = im.weights("blk.0.ffn_down.weight").unwrap();
    assert_eq!(w[5], e.sums[5] / 2048.0);
    // Written back, it reads the same (and llama-quantize's loader needs the same keys).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("again.gguf");
    im.write(&out).unwrap();
    assert_eq!(Imatrix::open(&out).unwrap(), im);
    // The data blob padded after its last (4-byte) tensor, as ggml's reader needs: llama.cpp
    // refused our first files for it. llama-imatrix's own file has the same length.
    let len = std::fs::metadata(&out).unwrap().len();
    assert_eq!(len % 32, 0);
    assert_eq!(len, std::fs::metadata(&path).unwrap().len());
}

#[test]
fn bad_imatrix_files_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = Imatrix::open(&llama_imatrix_path()).unwrap();
    let write = |name: &str, im: &Imatrix| {
        let p = dir.path().join(name);
        im.write(&p).unwrap();
        p
    };
    // A model is not an imatrix.
    let spec = TinySpec::new(Family::Llama, GgmlType::F32);
    let model = write_tiny(dir.path(), "model.gguf", &spec);
    assert!(msg(Imatrix::open(&model)).contains("not an imatrix"));
    // Truncated: a typed GGUF error, no panic.
    let bytes = std::fs::read(llama_imatrix_path()).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(msg(Imatrix::open(&cut)).contains("cut.gguf"));
    // Zero counts, non-finite sums.
    let mut zero = good.clone();
    zero.entries.get_mut("blk.3.attn_q.weight").unwrap().counts = vec![0.0];
    let s = msg(Imatrix::open(&write("zero.gguf", &zero)));
    assert!(
        s.contains("blk.3.attn_q.weight") && s.contains("no calibration token"),
        "{s}"
    );
    let mut nan = good.clone();
    nan.entries.get_mut("blk.3.attn_q.weight").unwrap().sums[9] = f32::NAN;
    assert!(msg(Imatrix::open(&write("nan.gguf", &nan))).contains("not finite"));
    // Names and widths that are not the model's.
    let teacher = GgufFile::open(qd_fixtures::teacher_path()).unwrap();
    let list: Vec<(String, Vec<usize>)> = teacher
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.shape()))
        .collect();
    let p = Path::new("x.gguf");
    good.check_model(p, &list).unwrap();
    let mut other = good.clone();
    other.entries.insert(
        "blk.40.attn_q.weight".into(),
        Entry {
            sums: vec![1.0; 640],
            counts: vec![1.0],
        },
    );
    assert!(msg(other.check_model(p, &list)).contains("blk.40.attn_q.weight is not a tensor"));
    let mut wide = good.clone();
    wide.entries
        .get_mut("blk.2.ffn_up.weight")
        .unwrap()
        .sums
        .push(1.0);
    assert!(msg(wide.check_model(p, &list)).contains("blk.2.ffn_up.weight"));
    // The tiny model's names are not the teacher's: export refuses before quantizing.
    let tiny = GgufFile::open(&model).unwrap();
    let with = WithImatrix {
        imatrix: &good,
        path: p,
    };
    let r = requantize(&tiny, Recipe::parse("q4_0").unwrap(), Some(with), vec![]);
    assert!(matches!(r, Err(ExportError::Imatrix(_))));
    // Recipes that do not use an imatrix say so; Q2_K_S needs one.
    let r = requantize(&teacher, Recipe::parse("q8_0").unwrap(), Some(with), vec![]);
    assert!(msg(r).contains("does not use an importance matrix"));
    let r = requantize(&teacher, Recipe::parse("q2_k_s").unwrap(), None, vec![]);
    assert!(msg(r).contains("needs an importance matrix"));
}

/// The acceptance test of `export-gguf --imatrix`: with llama-imatrix's own file, every tensor
/// of Q4_0, Q4_K_M, Q3_K_M and Q2_K_S equals llama-quantize's (type and sha256 of the bytes).
#[test]
fn teacher_with_llama_imatrix_is_byte_identical_with_llama_quantize() {
    let teacher = GgufFile::open(qd_fixtures::teacher_path()).unwrap();
    let path = llama_imatrix_path();
    let im = Imatrix::open(&path).unwrap();
    let want = qd_fixtures::read_json("gemma3-270m/imatrix_quantize.json");
    for (recipe, tensors) in want["types"].as_object().unwrap() {
        let with = WithImatrix {
            imatrix: &im,
            path: &path,
        };
        let out = requantize(&teacher, Recipe::parse(recipe).unwrap(), Some(with), vec![]).unwrap();
        let tensors = tensors.as_object().unwrap();
        assert_eq!(out.writer.tensors.len(), tensors.len(), "{recipe}");
        let mut differ = Vec::new();
        for t in &out.writer.tensors {
            let w = &tensors[&t.name];
            let hex: String = Sha256::digest(&t.data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if t.dtype.name() != w[0].as_str().unwrap() || hex != w[1].as_str().unwrap() {
                differ.push(format!("{} ({} vs {})", t.name, t.dtype.name(), w[0]));
            }
        }
        assert!(differ.is_empty(), "{recipe}: {differ:#?}");
    }
}
