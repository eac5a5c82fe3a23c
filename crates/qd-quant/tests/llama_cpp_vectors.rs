//! Our quantizers against llama.cpp's `ggml_quantize_chunk`, byte for byte, on the 12 reference
//! cases (115 outputs), and our dequantize of those bytes against a direct port of ggml's
//! `dequantize_row_*` (the crate's own, checked here for every output through requantization).

use qd_quant::{dequantize, fake_quantize, parse_type, quantize};
use std::borrow::Cow;

use candle_core::quantized::{QStorage, QTensor};
use candle_core::Device;
use qd_fixtures::read_f32;
use sha2::{Digest, Sha256};

#[test]
fn every_reference_output_is_reproduced_byte_for_byte() {
    let dir = qd_fixtures::data_dir().join("quant");
    let manifest = qd_fixtures::read_json("quant/manifest.json");
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in manifest["cases"].as_array().unwrap() {
        let name = case["case"].as_str().unwrap();
        let n = case["n_per_row"].as_u64().unwrap() as usize;
        let x = read_f32(&dir.join(format!("{name}.f32")));
        assert_eq!(x.len(), n * case["rows"].as_u64().unwrap() as usize);
        for (ty_name, out) in case["outputs"].as_object().unwrap() {
            let ty = parse_type(ty_name).unwrap();
            let want = std::fs::read(dir.join(out["file"].as_str().unwrap())).unwrap();
            let hex: String = Sha256::digest(&want)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                hex,
                out["sha256"].as_str().unwrap(),
                "{name}.{ty_name}: vector file corrupted"
            );
            let got = quantize(ty, &x, n).unwrap();
            if got != want {
                let first = got.iter().zip(&want).position(|(a, b)| a != b);
                failures.push(format!(
                    "{name}.{ty_name}: first differing byte {first:?} of {}",
                    want.len()
                ));
            }
            // Dequantizing llama.cpp's bytes equals our fused fake-quant of the input.
            let dq = dequantize(ty, &want).unwrap();
            let fq = fake_quantize(ty, &x, n).unwrap();
            assert!(
                dq.iter().zip(&fq).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}.{ty_name}: fake-quant != dequantize(reference)"
            );
            // An independent implementation (candle's) reads the same values from the bytes.
            let st = QStorage::from_data(Cow::Borrowed(&want[..]), &Device::Cpu, ty.to_candle())
                .unwrap();
            let cq = QTensor::new(st, (x.len() / n, n)).unwrap();
            let cdq = cq
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(
                dq.iter().zip(&cdq).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}.{ty_name}: candle reads other values"
            );
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} outputs differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, 115);
}
