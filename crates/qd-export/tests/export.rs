//! Recipes against llama.cpp's own choices on the real teacher, and requantized tiny models
//! whose every tensor must equal the fake-quant of its source, bit for bit.

use candle_core::{Device, Tensor};
use qd_export::{requantize, write_new, ExportError, Recipe};
use qd_fixtures::tiny::{write_tiny, Family, TinySpec};
use qd_gguf::{GgmlType, GgufFile};

/// Our `q4_k_m` recipe picks, for every one of the teacher's 236 tensors, the type that
/// llama-quantize picked when it made the teacher.
#[test]
fn q4_k_m_reproduces_the_teachers_layout() {
    let teacher = GgufFile::open(qd_fixtures::teacher_path()).unwrap();
    let out = requantize(
        &teacher,
        Recipe::Llama(qd_export::Ftype::Q4KM),
        None,
        vec![],
    )
    .unwrap();
    assert_eq!(out.tensors.len(), 236);
    for (t, info) in out.tensors.iter().zip(teacher.tensors()) {
        assert_eq!(t.name, info.name);
        assert_eq!(t.type_name(), info.dtype.name(), "{}", t.name);
        // Same type: llama-quantize keeps the bytes, and so do we.
        assert!(t.copied, "{}", t.name);
    }
    // The Q4_K tensors whose 640-value rows cannot hold a super-block are reported.
    let fb = out.fallbacks();
    // q, k, gate, up and v in each of 18 blocks (v wanted Q6_K or Q4_K, got Q8_0 or Q5_0).
    assert_eq!(fb.len(), 18 * 5, "{fb:#?}");
    assert!(fb
        .iter()
        .any(|l| l.starts_with("blk.0.attn_q.weight: rows of 640 do not fit Q4_K; using Q5_0")));
}

fn requantized(spec: &TinySpec, recipe: Recipe) -> (GgufFile, GgufFile) {
    let dir = tempfile::tempdir().unwrap();
    let src_path = write_tiny(dir.path(), "src.gguf", spec);
    let src = GgufFile::open(&src_path).unwrap();
    let out = requantize(&src, recipe, None, vec![]).unwrap();
    let path = dir.path().join("out.gguf");
    write_new(&out, &path, false).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (src, GgufFile::from_bytes("out.gguf", bytes).unwrap())
}

#[test]
fn every_recipe_writes_the_fake_quant_of_its_source() {
    let dev = Device::Cpu;
    let spec = TinySpec::new(Family::Gemma3, GgmlType::F32);
    let recipes = [
        "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s",
        "q4_k_m", "q5_k_s", "q5_k_m", "q6_k", "qat-q4", "f32",
    ];
    for r in recipes {
        let recipe = Recipe::parse(r).unwrap();
        let (src, out) = requantized(&spec, recipe);
        assert_eq!(
            out.get_u64("general.file_type").unwrap(),
            recipe.file_type() as u64
        );
        assert_eq!(
            out.get_u64("gemma3.block_count").unwrap(),
            src.get_u64("gemma3.block_count").unwrap()
        );
        assert_eq!(
            out.get("tokenizer.ggml.tokens"),
            src.get("tokenizer.ggml.tokens")
        );
        assert_eq!(out.get_str("qat_distill.recipe").unwrap(), recipe.name());
        let mut quantized = 0;
        for info in out.tensors() {
            let x = src.dequantize(&info.name, &dev).unwrap();
            let row = *x.dims().last().unwrap();
            let got: Vec<f32> = out
                .dequantize(&info.name, &dev)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let want: Vec<f32> = match qd_quant::quantizable(info.dtype) {
                Ok(ty) => {
                    quantized += 1;
                    qd_quant::fake_quantize(ty, &x.flatten_all().unwrap().to_vec1().unwrap(), row)
                        .unwrap()
                }
                Err(_) => {
                    assert_eq!(info.dtype, GgmlType::F32, "{r} {}", info.name);
                    x.flatten_all().unwrap().to_vec1().unwrap()
                }
            };
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{r}: {} differs from the fake-quant of its source",
                info.name
            );
        }
        assert_eq!(quantized > 0, r != "f32", "{r}");
        // Our loader runs the result.
        let m = qd_model::load_quantized(&out, &dev).unwrap();
        let ids = Tensor::new(&[[2u32, 10, 20, 30]], &dev).unwrap();
        let out = m.forward(&ids, None, &Default::default()).unwrap();
        assert!(
            out.logits
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .all(|v| v.is_finite()),
            "{r}"
        );
    }
}

#[test]
fn embedding_rules_follow_llama_cpp() {
    // Tied LM head with 256-value rows: Q6_K under q4_0, Q8_0 under qat-q4 and q8_0.
    let spec = TinySpec::new(Family::Gemma3, GgmlType::F32);
    for (r, ty) in [
        ("q4_0", GgmlType::Q6K),
        ("qat-q4", GgmlType::Q8_0),
        ("q8_0", GgmlType::Q8_0),
    ] {
        let (_, out) = requantized(&spec, Recipe::parse(r).unwrap());
        assert_eq!(
            out.tensor_info("token_embd.weight").unwrap().dtype,
            ty,
            "{r}"
        );
    }
}

#[test]
fn existing_output_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec::new(Family::Llama, GgmlType::Q8_0);
    let src = GgufFile::open(write_tiny(dir.path(), "src.gguf", &spec)).unwrap();
    let out = requantize(&src, Recipe::Llama(qd_export::Ftype::Q4_0), None, vec![]).unwrap();
    let target = dir.path().join("exists.gguf");
    std::fs::write(&target, b"keep me").unwrap();
    assert!(matches!(
        write_new(&out, &target, false),
        Err(ExportError::Exists { .. })
    ));
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    write_new(&out, &target, true).unwrap();
    assert!(GgufFile::open(&target).is_ok());
    // A target that cannot be written leaves no temp file behind.
    let bad = dir.path().join("no-such-dir").join("x.gguf");
    assert!(matches!(
        write_new(&out, &bad, false),
        Err(ExportError::Io { .. })
    ));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}
