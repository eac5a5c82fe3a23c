//! Corrupted and hostile files: each yields its typed error, none panics or over-allocates.

use qd_gguf::{
    string_array, GgmlType, GgufErrorKind as K, GgufFile, GgufWriter, TensorData, Value, ValueType,
};

fn valid() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("general.alignment", Value::U32(32));
    w.set("some.array", string_array(["a", "b"]));
    w.set(
        "nested",
        Value::Array(
            ValueType::Array,
            vec![Value::Array(ValueType::U8, vec![Value::U8(1)])],
        ),
    );
    w.add_tensor(TensorData {
        name: "t".into(),
        shape: vec![2, 32],
        dtype: GgmlType::Q8_0,
        data: vec![0u8; 2 * 34],
    });
    w.add_tensor(TensorData {
        name: "f".into(),
        shape: vec![3],
        dtype: GgmlType::F32,
        data: vec![0u8; 12],
    });
    w.to_bytes()
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile, qd_gguf::GgufError> {
    GgufFile::from_bytes("hostile.gguf", bytes)
}

fn kind(bytes: Vec<u8>) -> K {
    let e = parse(bytes).err().expect("must fail");
    assert!(
        e.to_string().starts_with("hostile.gguf: "),
        "error names the file: {e}"
    );
    e.kind
}

/// Offset of the tensor-info section: after the metadata of `valid()`.
fn tensor_info_offset(bytes: &[u8]) -> usize {
    let f = parse(bytes.to_vec()).unwrap();
    let _ = f;
    // name "t": u64 len + 1 byte, then n_dims.
    bytes
        .windows(9)
        .position(|w| w == [1, 0, 0, 0, 0, 0, 0, 0, b't'])
        .unwrap()
}

#[test]
fn valid_file_round_trips() {
    let f = parse(valid()).unwrap();
    assert_eq!(f.header.version, 3);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.tensor_info("t").unwrap().shape(), vec![2, 32]);
    assert_eq!(f.tensor_bytes("t").unwrap().len(), 68);
    assert_eq!(
        f.dequantize("f", &candle_core::Device::Cpu).unwrap().dims(),
        &[3]
    );
}

#[test]
fn version_2_is_read() {
    let mut b = valid();
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(parse(b).unwrap().header.version, 2);
}

#[test]
fn bad_magic() {
    let mut b = valid();
    b[0] = b'X';
    assert!(matches!(kind(b), K::BadMagic(_)));
}

#[test]
fn empty_and_truncated_headers() {
    assert!(matches!(kind(vec![]), K::Truncated { .. }));
    let b = valid();
    for cut in [3, 7, 12, 20, 30, 60] {
        assert!(
            matches!(
                kind(b[..cut].to_vec()),
                K::Truncated { .. } | K::AbsurdCount { .. }
            ),
            "cut at {cut}"
        );
    }
}

#[test]
fn unsupported_version() {
    let mut b = valid();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(kind(b.clone()), K::UnsupportedVersion(1)));
    b[4..8].copy_from_slice(&0x0300_0000u32.to_le_bytes()); // big-endian v3
    assert!(matches!(kind(b), K::UnsupportedVersion(_)));
}

#[test]
fn absurd_counts_do_not_allocate() {
    let mut b = valid();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(kind(b), K::AbsurdCount { what: "tensor", .. }));
    let mut b = valid();
    b[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(matches!(
        kind(b),
        K::AbsurdCount {
            what: "metadata",
            ..
        }
    ));
    // An array claiming 2^62 strings.
    let mut b = valid();
    let at = b.windows(10).position(|w| w == b"some.array").unwrap() + 10 + 4 + 4;
    b[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(matches!(kind(b), K::AbsurdCount { .. }));
    // A string claiming 2^63 bytes.
    let mut b = valid();
    b[24..32].copy_from_slice(&(1u64 << 63).to_le_bytes());
    assert!(matches!(kind(b), K::Truncated { .. }));
}

#[test]
fn unknown_value_type() {
    let mut b = valid();
    // The first kv's type follows its key "general.architecture" (8 + 20 bytes from 24).
    b[24 + 8 + 20..24 + 8 + 20 + 4].copy_from_slice(&99u32.to_le_bytes());
    assert!(matches!(kind(b), K::UnknownValueType(99)));
}

#[test]
fn unknown_tensor_type() {
    let mut b = valid();
    let at = tensor_info_offset(&b) + 9 + 4 + 2 * 8;
    b[at..at + 4].copy_from_slice(&77u32.to_le_bytes());
    assert!(matches!(kind(b), K::UnknownTensorType { id: 77, .. }));
}

#[test]
fn bad_dimensions() {
    let mut b = valid();
    let at = tensor_info_offset(&b) + 9;
    b[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
    assert!(matches!(kind(b), K::BadTensor { .. } | K::Truncated { .. }));
    // Row length 33 is not a multiple of Q8_0's 32.
    let mut b = valid();
    let at = tensor_info_offset(&b) + 9 + 4;
    b[at..at + 8].copy_from_slice(&33u64.to_le_bytes());
    assert!(matches!(kind(b), K::BadTensor { .. }));
    // Dimensions whose product overflows.
    let mut b = valid();
    let at = tensor_info_offset(&b) + 9 + 4 + 8;
    b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(kind(b), K::BadTensor { .. }));
}

#[test]
fn tensor_data_past_end() {
    let b = valid();
    // The 12 data bytes are followed by 20 bytes padding the blob to the alignment (32).
    let short = b[..b.len() - 20 - 4].to_vec();
    assert!(matches!(kind(short), K::TensorPastEnd { .. }));
    let mut b = valid();
    let at = tensor_info_offset(&b) + 9 + 4 + 2 * 8 + 4;
    b[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(kind(b), K::TensorPastEnd { .. }));
    let mut b = valid();
    b[at..at + 8].copy_from_slice(&3u64.to_le_bytes());
    assert!(matches!(kind(b), K::BadTensor { .. }), "misaligned offset");
}

#[test]
fn non_utf8_strings() {
    let mut b = valid();
    let at = b.windows(5).position(|w| w == b"llama").unwrap();
    b[at] = 0xff;
    assert!(matches!(kind(b), K::InvalidUtf8 { .. }));
}

#[test]
fn bad_alignment() {
    let mut b = valid();
    let at = b
        .windows(17)
        .position(|w| w == b"general.alignment")
        .unwrap()
        + 17
        + 4;
    b[at..at + 4].copy_from_slice(&3u32.to_le_bytes());
    assert!(matches!(kind(b), K::BadAlignment(3)));
}

#[test]
fn typed_metadata_access() {
    let f = parse(valid()).unwrap();
    assert!(matches!(
        f.get_u64("general.architecture").unwrap_err().kind,
        K::WrongType { .. }
    ));
    assert!(matches!(
        f.get_str("missing").unwrap_err().kind,
        K::MissingKey(_)
    ));
    assert!(matches!(
        f.tensor_info("nope").unwrap_err().kind,
        K::MissingTensor(_)
    ));
    assert_eq!(f.opt("missing", GgufFile::get_u64).unwrap(), None);
}

#[test]
fn missing_file_is_an_io_error() {
    let e = GgufFile::open("/nonexistent/model.gguf").err().unwrap();
    assert!(matches!(e.kind, K::Io(_)));
    assert!(e.to_string().contains("/nonexistent/model.gguf"));
}

/// Random byte flips and truncations never panic.
#[test]
fn fuzzed_headers_never_panic() {
    let base = valid();
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut b = base.clone();
        for _ in 0..(next() % 4 + 1) {
            let i = (next() as usize) % b.len();
            b[i] = next() as u8;
        }
        if next() % 3 == 0 {
            b.truncate((next() as usize) % b.len());
        }
        let _ = parse(b);
    }
}
