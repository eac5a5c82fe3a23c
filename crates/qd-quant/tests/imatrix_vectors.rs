//! The importance-weighted quantizers against llama.cpp's `ggml_quantize_chunk` with an imatrix
//! (what `llama-quantize --imatrix` runs), byte for byte, on the 12 reference inputs with one
//! seeded importance vector each (tests/data/quant/imatrix, made by tools/imatrix-vectors.sh).

use qd_fixtures::read_f32;
use qd_gguf::GgmlType;
use qd_quant::{dequantize, fake_quantize_weighted, parse_type, quantize_weighted, QuantError};
use sha2::{Digest, Sha256};

#[test]
fn every_weighted_reference_output_is_reproduced_byte_for_byte() {
    let dir = qd_fixtures::data_dir().join("quant");
    let manifest = qd_fixtures::read_json("quant/imatrix/manifest.json");
    let (mut checked, mut failures) = (0, Vec::new());
    for case in manifest["cases"].as_array().unwrap() {
        let name = case["case"].as_str().unwrap();
        let n = case["n_per_row"].as_u64().unwrap() as usize;
        let x = read_f32(&dir.join(format!("{name}.f32")));
        let w = read_f32(&dir.join("imatrix").join(case["weights"].as_str().unwrap()));
        assert_eq!(w.len(), n);
        for (ty_name, out) in case["outputs"].as_object().unwrap() {
            let ty = parse_type(ty_name).unwrap();
            let want =
                std::fs::read(dir.join("imatrix").join(out["file"].as_str().unwrap())).unwrap();
            let hex: String = Sha256::digest(&want)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(hex, out["sha256"].as_str().unwrap(), "{name}.{ty_name}");
            let got = quantize_weighted(ty, &x, n, &w).unwrap();
            if got != want {
                let first = got.iter().zip(&want).position(|(a, b)| a != b);
                failures.push(format!("{name}.{ty_name}: first differing byte {first:?}"));
            }
            // The fake-quant QAT trains through is the dequantized reference.
            let fq = fake_quantize_weighted(ty, &x, n, &w).unwrap();
            let dq = dequantize(ty, &want).unwrap();
            assert!(
                fq.iter().zip(&dq).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}.{ty_name}"
            );
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(checked >= 100, "only {checked} outputs");
}

/// The weights change the result: an imatrix that is not uniform gives other bytes than the
/// reference quantizer on real weights (otherwise the test above could pass by ignoring them).
#[test]
fn weights_matter_and_bad_weights_are_refused() {
    let dir = qd_fixtures::data_dir().join("quant");
    let x = read_f32(&dir.join("teacher_blk_0_ffn_down_8x2048.f32"));
    let w = read_f32(&dir.join("imatrix/teacher_blk_0_ffn_down_8x2048.imatrix.f32"));
    for ty in [GgmlType::Q4_0, GgmlType::Q4K, GgmlType::Q6K] {
        let plain = qd_quant::quantize(ty, &x, 2048).unwrap();
        assert_ne!(quantize_weighted(ty, &x, 2048, &w).unwrap(), plain, "{ty}");
    }
    let short = &w[..100];
    assert!(matches!(
        quantize_weighted(GgmlType::Q4_0, &x, 2048, short),
        Err(QuantError::Weights(_))
    ));
    let mut nan = w.clone();
    nan[7] = f32::NAN;
    assert!(matches!(
        quantize_weighted(GgmlType::Q4_0, &x, 2048, &nan),
        Err(QuantError::Weights(_))
    ));
}
