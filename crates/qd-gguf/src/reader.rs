//! Parsing of the GGUF header from a byte slice.
//!
//! Every count read from the file is checked against the bytes that remain before anything is
//! allocated for it, so a hostile header cannot make us reserve gigabytes or run past the end.

use crate::dtype::GgmlType;
use crate::error::GgufErrorKind as E;
use crate::value::{Value, ValueType};

pub const MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_ARRAY_DEPTH: usize = 4;
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: u32 = 4;

/// A tensor's entry in the header. `dims` is in ggml order (innermost first).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub dtype: GgmlType,
    /// Offset relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn n_bytes(&self) -> u64 {
        // Validated at parse time, so this cannot fail for a parsed tensor.
        self.dtype.bytes_for(self.n_elements()).unwrap_or(0)
    }

    /// Shape in row-major (candle) order: outermost first.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], E> {
        if n > self.remaining() {
            return Err(E::Truncated {
                what,
                offset: self.pos,
                needed: n,
                len: self.buf.len(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], E> {
        Ok(self
            .take(N as u64, what)?
            .try_into()
            .expect("length checked"))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, E> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, E> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items each at least `min_size` bytes long, bounded by what the file can hold.
    fn count(&mut self, what: &'static str, min_size: u64) -> Result<u64, E> {
        let n = self.u64(what)?;
        let max = self.remaining() / min_size.max(1);
        if n > max {
            return Err(E::AbsurdCount {
                what,
                count: n,
                max,
            });
        }
        Ok(n)
    }

    fn string(&mut self, what: &'static str) -> Result<String, E> {
        let len = self.u64(what)?;
        let offset = self.pos;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| E::InvalidUtf8 { offset })
    }

    fn value(&mut self, ty: ValueType, depth: usize) -> Result<Value, E> {
        const W: &str = "metadata value";
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(W)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(W)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(W)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(W)?)),
            ValueType::U32 => Value::U32(self.u32(W)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(W)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(W)?)),
            ValueType::Bool => Value::Bool(self.array::<1>(W)?[0] != 0),
            ValueType::String => Value::String(self.string(W)?),
            ValueType::U64 => Value::U64(self.u64(W)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(W)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(W)?)),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(E::TooDeep(MAX_ARRAY_DEPTH));
                }
                let id = self.u32("array element type")?;
                let ety = ValueType::from_id(id).ok_or(E::UnknownValueType(id))?;
                let n = self.count("array element", ety.min_size())?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(ety, depth + 1)?);
                }
                Value::Array(ety, items)
            }
        })
    }
}

/// Parses the header of a GGUF file held in `buf` and validates every tensor's extent.
pub fn parse(buf: &[u8]) -> Result<Header, E> {
    let mut c = Cursor { buf, pos: 0 };
    let (version, n_tensors, n_kv) = c.preamble()?;
    let metadata = c.metadata(n_kv)?;
    let alignment = alignment_of(&metadata)?;
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = std::collections::HashSet::new();
    for _ in 0..n_tensors {
        let t = c.tensor_info(alignment)?;
        if !names.insert(t.name.clone()) {
            return Err(E::Duplicate {
                what: "tensor",
                name: t.name,
            });
        }
        tensors.push(t);
    }
    let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
    check_extents(&tensors, data_offset, buf.len())?;
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

impl Cursor<'_> {
    /// Magic, version and the two counts, each count bounded by the bytes left.
    fn preamble(&mut self) -> Result<(u32, u64, u64), E> {
        let magic: [u8; 4] = self.array("magic")?;
        if magic != MAGIC {
            return Err(E::BadMagic(magic));
        }
        let version = self.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(E::UnsupportedVersion(version));
        }
        // Minimum sizes: a tensor info is name(8) + n_dims(4) + type(4) + offset(8);
        // a kv is key(8) + type(4) + the smallest value (1).
        let n_tensors = self.u64("tensor count")?;
        let n_kv = self.u64("metadata count")?;
        let rem = self.remaining();
        if n_tensors > rem / 24 {
            return Err(E::AbsurdCount {
                what: "tensor",
                count: n_tensors,
                max: rem / 24,
            });
        }
        if n_kv > rem / 13 {
            return Err(E::AbsurdCount {
                what: "metadata",
                count: n_kv,
                max: rem / 13,
            });
        }
        Ok((version, n_tensors, n_kv))
    }

    /// `n` key/value pairs; a key seen twice is an error.
    fn metadata(&mut self, n: u64) -> Result<Vec<(String, Value)>, E> {
        let mut metadata: Vec<(String, Value)> = Vec::with_capacity(n as usize);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..n {
            let key = self.string("metadata key")?;
            let id = self.u32("metadata value type")?;
            let ty = ValueType::from_id(id).ok_or(E::UnknownValueType(id))?;
            let value = self.value(ty, 0)?;
            if !seen.insert(key.clone()) {
                return Err(E::Duplicate {
                    what: "metadata key",
                    name: key,
                });
            }
            metadata.push((key, value));
        }
        Ok(metadata)
    }

    /// One tensor's info, checked on its own: dimensions, type, element and byte counts that
    /// do not overflow, rows of whole blocks and an aligned offset.
    fn tensor_info(&mut self, alignment: u64) -> Result<TensorInfo, E> {
        let name = self.string("tensor name")?;
        let n_dims = self.u32("tensor dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(E::BadTensor {
                tensor: name,
                problem: format!("{n_dims} dimensions (must be 1..={MAX_DIMS})"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64("tensor dimension")?);
        }
        let id = self.u32("tensor type")?;
        let dtype = GgmlType::from_id(id).ok_or_else(|| E::UnknownTensorType {
            tensor: name.clone(),
            id,
        })?;
        let offset = self.u64("tensor offset")?;
        let bad = |problem: String| E::BadTensor {
            tensor: name.clone(),
            problem,
        };
        let n = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("element count of {dims:?} overflows")))?;
        if !dims[0].is_multiple_of(dtype.block_size() as u64) {
            return Err(bad(format!(
                "row length {} is not a multiple of {}'s block size {}",
                dims[0],
                dtype,
                dtype.block_size()
            )));
        }
        if dtype.bytes_for(n).is_none() {
            return Err(bad("byte size overflows".into()));
        }
        if !offset.is_multiple_of(alignment) {
            return Err(bad(format!(
                "offset {offset} is not aligned to {alignment}"
            )));
        }
        Ok(TensorInfo {
            name,
            dims,
            dtype,
            offset,
        })
    }
}

/// `general.alignment` if present (a non-zero power of two), else the default.
fn alignment_of(metadata: &[(String, Value)]) -> Result<u64, E> {
    match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some((_, v)) => {
            let a = v.as_u64().unwrap_or(0);
            if a == 0 || !a.is_power_of_two() {
                return Err(E::BadAlignment(a));
            }
            Ok(a)
        }
    }
}

/// Every tensor's bytes lie inside a file of `len` bytes whose data starts at `data_offset`.
fn check_extents(tensors: &[TensorInfo], data_offset: u64, len: usize) -> Result<(), E> {
    for t in tensors {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes()));
        match (start, end) {
            (Some(_), Some(e)) if e <= len as u64 => {}
            _ => {
                return Err(E::TensorPastEnd {
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    len,
                })
            }
        }
    }
    Ok(())
}
