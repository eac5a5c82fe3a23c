//! An opened GGUF file: the parsed header plus its bytes, memory-mapped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::{QStorage, QTensor};
use candle_core::{Device, Tensor};

use crate::error::{GgufError, GgufErrorKind as E, Result};
use crate::reader::{parse, Header, TensorInfo};
use crate::value::Value;

enum Bytes {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mmap(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    pub header: Header,
    kv_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

impl GgufFile {
    /// Opens and validates `path`, memory-mapping it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let err = |e: std::io::Error| GgufError::new(&path, E::Io(e));
        let file = std::fs::File::open(&path).map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        let bytes = if len == 0 {
            Bytes::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only; a file truncated underneath us is the usual mmap
            // caveat that every GGUF loader (llama.cpp included) accepts.
            Bytes::Mmap(unsafe { memmap2::Mmap::map(&file) }.map_err(err)?)
        };
        Self::from_bytes_inner(path, bytes)
    }

    /// Parses an in-memory file; `label` names it in errors.
    pub fn from_bytes(label: impl Into<PathBuf>, data: Vec<u8>) -> Result<Self> {
        Self::from_bytes_inner(label.into(), Bytes::Owned(data))
    }

    fn from_bytes_inner(path: PathBuf, bytes: Bytes) -> Result<Self> {
        let header = parse(bytes.as_slice()).map_err(|k| GgufError::new(&path, k))?;
        let kv_index = header
            .metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let tensor_index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            path,
            bytes,
            header,
            kv_index,
            tensor_index,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_size(&self) -> usize {
        self.bytes.as_slice().len()
    }

    pub fn error(&self, kind: E) -> GgufError {
        GgufError::new(&self.path, kind)
    }

    pub fn metadata(&self) -> &[(String, Value)] {
        &self.header.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv_index.get(key).map(|&i| &self.header.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| self.error(E::MissingKey(key.into())))
    }

    fn wrong(&self, key: &str, v: &Value, expected: &'static str) -> GgufError {
        self.error(E::WrongType {
            key: key.into(),
            found: v.value_type().name(),
            expected,
        })
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| self.wrong(key, v, "unsigned integer"))
    }

    pub fn get_usize(&self, key: &str) -> Result<usize> {
        Ok(self.get_u64(key)? as usize)
    }

    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| self.wrong(key, v, "number"))
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| self.wrong(key, v, "string"))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| self.wrong(key, v, "bool"))
    }

    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| self.wrong(key, v, "array"))
    }

    /// `Ok(None)` when absent, an error when present with the wrong type.
    pub fn opt<'a, T>(
        &'a self,
        key: &str,
        f: impl Fn(&'a Self, &str) -> Result<T>,
    ) -> Result<Option<T>> {
        if self.get(key).is_none() {
            Ok(None)
        } else {
            f(self, key).map(Some)
        }
    }

    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor_index
            .get(name)
            .map(|&i| &self.header.tensors[i])
            .ok_or_else(|| self.error(E::MissingTensor(name.into())))
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensor_index.contains_key(name)
    }

    /// The raw bytes of a tensor, bounds-checked at open time.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self.tensor_info(name)?;
        let start = (self.header.data_offset + t.offset) as usize;
        Ok(&self.bytes.as_slice()[start..start + t.n_bytes() as usize])
    }

    /// Checks one tensor's data as llama.cpp's `--check-tensors` does: finite values and block
    /// scales (see [`crate::validate`]); the error names the tensor, row and block.
    pub fn check_tensor(&self, name: &str) -> Result<()> {
        let t = self.tensor_info(name)?;
        let row = t.dims.first().copied().unwrap_or(0) as usize;
        crate::validate::check_data(t.dtype, self.tensor_bytes(name)?, row).map_err(|bad| {
            self.error(E::NonFinite {
                tensor: name.into(),
                bad,
            })
        })
    }

    /// [`Self::check_tensor`] for every tensor, in file order; the first bad one fails.
    pub fn check_tensors(&self) -> Result<()> {
        self.header
            .tensors
            .iter()
            .try_for_each(|t| self.check_tensor(&t.name))
    }

    pub fn qtensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        let t = self.tensor_info(name)?;
        let data = self.tensor_bytes(name)?;
        let cerr = |e: candle_core::Error| self.error(E::Candle(name.into(), e.to_string()));
        let storage = QStorage::from_data(
            std::borrow::Cow::Borrowed(data),
            device,
            t.dtype.to_candle(),
        )
        .map_err(cerr)?;
        QTensor::new(storage, t.shape()).map_err(cerr)
    }

    /// The tensor dequantized to f32.
    pub fn dequantize(&self, name: &str, device: &Device) -> Result<Tensor> {
        let q = self.qtensor(name, device)?;
        q.dequantize(device)
            .map_err(|e| self.error(E::Candle(name.into(), e.to_string())))
    }
}
