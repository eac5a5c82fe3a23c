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
    let magic: [u8; 4] = c.array("magic")?;
    if magic != MAGIC {
        return Err(E::BadMagic(magic));
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(E::UnsupportedVersion(version));
    }
    // Minimum sizes: a tensor info is name(8) + n_dims(4) + type(4) + offset(8);
    // a kv is key(8) + type(4) + the smallest value (1).
    let n_tensors_raw = c.u64("tensor count")?;
    let n_kv_raw = c.u64("metadata count")?;
    let rem = c.remaining();
    if n_tensors_raw > rem / 24 {
        return Err(E::AbsurdCount {
            what: "tensor",
            count: n_tensors_raw,
            max: rem / 24,
        });
    }
    if n_kv_raw > rem / 13 {
        return Err(E::AbsurdCount {
            what: "metadata",
            count: n_kv_raw,
            max: rem / 13,
        });
    }

    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(n_kv_raw as usize);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n_kv_raw {
        let key = c.string("metadata key")?;
        let id = c.u32("metadata value type")?;
        let ty = ValueType::from_id(id).ok_or(E::UnknownValueType(id))?;
        let value = c.value(ty, 0)?;
        if !seen.insert(key.clone()) {
            return Err(E::Duplicate {
                what: "metadata key",
                name: key,
            });
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => {
            let a = v.as_u64().unwrap_or(0);
            if a == 0 || !a.is_power_of_two() {
                return Err(E::BadAlignment(a));
            }
            a
        }
    };

    let mut tensors = Vec::with_capacity(n_tensors_raw as usize);
    let mut names = std::collections::HashSet::new();
    for _ in 0..n_tensors_raw {
        let name = c.string("tensor name")?;
        let n_dims = c.u32("tensor dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(E::BadTensor {
                tensor: name,
                problem: format!("{n_dims} dimensions (must be 1..={MAX_DIMS})"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64("tensor dimension")?);
        }
        let id = c.u32("tensor type")?;
        let dtype = GgmlType::from_id(id).ok_or_else(|| E::UnknownTensorType {
            tensor: name.clone(),
            id,
        })?;
        let offset = c.u64("tensor offset")?;
        let n = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| E::BadTensor {
                tensor: name.clone(),
                problem: format!("element count of {dims:?} overflows"),
            })?;
        if !dims[0].is_multiple_of(dtype.block_size() as u64) {
            return Err(E::BadTensor {
                tensor: name,
                problem: format!(
                    "row length {} is not a multiple of {}'s block size {}",
                    dims[0],
                    dtype,
                    dtype.block_size()
                ),
            });
        }
        if dtype.bytes_for(n).is_none() {
            return Err(E::BadTensor {
                tensor: name,
                problem: "byte size overflows".into(),
            });
        }
        if !offset.is_multiple_of(alignment) {
            return Err(E::BadTensor {
                tensor: name,
                problem: format!("offset {offset} is not aligned to {alignment}"),
            });
        }
        if !names.insert(name.clone()) {
            return Err(E::Duplicate {
                what: "tensor",
                name,
            });
        }
        tensors.push(TensorInfo {
            name,
            dims,
            dtype,
            offset,
        });
    }

    let pos = c.pos as u64;
    let data_offset = pos.div_ceil(alignment) * alignment;
    let len = buf.len() as u64;
    for t in &tensors {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes()));
        match (start, end) {
            (Some(_), Some(e)) if e <= len => {}
            _ => {
                return Err(E::TensorPastEnd {
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    len: buf.len(),
                })
            }
        }
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}
