//! A reader for GGUF files (llama.cpp's model format, versions 2 and 3): the header, the
//! metadata key/value pairs and the tensor descriptions. Tensor data is not read here;
//! `data_offset` says where it starts.
//!
//! Layout (little-endian): `"GGUF"`, `u32` version, `u64` tensor count, `u64` metadata
//! count; each metadata entry is a string key, a `u32` value type and the value (strings
//! are a `u64` byte length and UTF-8 bytes; arrays a `u32` element type, a `u64` length
//! and the elements); each tensor is a name, `u32` dimension count, `u64` dimensions,
//! `u32` ggml type and `u64` offset into the data section, which starts at the next
//! multiple of `general.alignment` (32 by default).
//!
//! Every length is checked against the bytes that remain before anything is allocated,
//! so a truncated or lying file is an error naming the offset, never a huge allocation.

use crate::error::{HanpackError, Result};

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An integer value of any width, if it fits in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => i64::try_from(v).ok()?,
            Value::I64(v) => v,
            _ => return None,
        })
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    /// The ggml type number (0 = F32, 1 = F16, 2 = Q4_0, ...).
    pub ggml_type: u32,
    /// Offset of the tensor's data from `data_offset`.
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    /// Where the tensor data starts in the file.
    pub data_offset: u64,
}

impl Gguf {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Nesting limit for arrays of arrays (the format allows them; real files use one level).
const MAX_DEPTH: u32 = 8;

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    origin: &'a str,
}

impl<'a> Cursor<'a> {
    fn fail(&self, what: &str) -> HanpackError {
        HanpackError::ModelFormat {
            origin: self.origin.to_owned(),
            reason: format!("GGUF: {what} at byte {}", self.pos),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.data.len() - self.pos < n {
            return Err(self.fail(&format!(
                "the file ends inside {what} (needs {n} bytes, {} left)",
                self.data.len() - self.pos
            )));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items of at least `min_size` bytes each, checked against what is left.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let left = (self.data.len() - self.pos) as u64;
        if n.saturating_mul(min_size as u64) > left {
            self.pos = at;
            return Err(self.fail(&format!(
                "{what} is {n}, more than the {left} bytes left can hold"
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(&format!("the length of {what}"), 1)?;
        let at = self.pos;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            self.pos = at;
            self.fail(&format!("{what} is not UTF-8"))
        })
    }

    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(self.array::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.fail(&format!("{what} is a bool of value {b}"))),
            },
            8 => Value::String(self.string(what)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(
                        self.fail(&format!("{what} nests arrays more than {MAX_DEPTH} deep"))
                    );
                }
                let elem = self.u32(&format!("the element type of {what}"))?;
                let size = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    other => {
                        return Err(
                            self.fail(&format!("{what} has elements of unknown type {other}"))
                        )
                    }
                };
                let n = self.count(&format!("the length of {what}"), size)?;
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    out.push(self.value(elem, what, depth + 1)?);
                }
                Value::Array(out)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(self.fail(&format!("{what} has unknown value type {other}"))),
        })
    }
}

/// Parses a GGUF file from disk. The file is memory-mapped, so only the pages holding the
/// header are read: a multi-gigabyte model costs no more than its metadata.
pub fn parse_file(path: &std::path::Path) -> Result<Gguf> {
    let io = |source| HanpackError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.len() == 0 {
        return parse(&[], &path.display().to_string());
    }
    // SAFETY: the map is only read, and only during this call; a file truncated by
    // another process meanwhile could fault, as with any mmap reader (the gguf package
    // and llama.cpp map files the same way).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    parse(&map, &path.display().to_string())
}

/// True if `data` starts with the GGUF magic.
pub fn is_gguf(data: &[u8]) -> bool {
    data.starts_with(b"GGUF")
}

/// Parses the header, metadata and tensor descriptions of a GGUF file.
pub fn parse(data: &[u8], origin: &str) -> Result<Gguf> {
    let mut c = Cursor {
        data,
        pos: 0,
        origin,
    };
    if !is_gguf(data) {
        return Err(c.fail("not a GGUF file (no \"GGUF\" magic)"));
    }
    c.pos = 4;
    let version = c.u32("the version")?;
    if !(2..=3).contains(&version) {
        c.pos -= 4;
        return Err(c.fail(&format!("version {version} is not supported (2 and 3 are)")));
    }
    // Each tensor description takes at least 8 + 4 + 4 + 8 bytes, each entry 8 + 4 + 1.
    let n_tensors = c.count("the tensor count", 24)?;
    let n_kv = c.count("the metadata count", 13)?;
    let mut metadata = Vec::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key {i}"))?;
        let ty = c.u32(&format!("the type of {key:?}"))?;
        let value = c.value(ty, &format!("the value of {key:?}"), 0)?;
        metadata.push((key, value));
    }
    let mut tensors = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = c.string(&format!("the name of tensor {i}"))?;
        let n_dims = c.u32(&format!("the dimension count of {name:?}"))?;
        if n_dims > 8 {
            return Err(c.fail(&format!(
                "tensor {name:?} has {n_dims} dimensions (at most 8)"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&format!("a dimension of {name:?}"))?);
        }
        let ggml_type = c.u32(&format!("the type of {name:?}"))?;
        let offset = c.u64(&format!("the data offset of {name:?}"))?;
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }
    let gguf = Gguf {
        version,
        metadata,
        tensors,
        data_offset: 0,
    };
    let alignment = match gguf.get("general.alignment") {
        None => 32,
        Some(v) => match v.as_i64() {
            Some(a) if a > 0 && (a as u64).is_power_of_two() => a as u64,
            _ => return Err(c.fail(&format!("general.alignment is {v:?}, not a power of two"))),
        },
    };
    let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
    Ok(Gguf {
        data_offset,
        ..gguf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    /// A small file written by hand: two metadata entries and one tensor.
    fn sample() -> Vec<u8> {
        let mut f = b"GGUF".to_vec();
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(&1u64.to_le_bytes());
        f.extend_from_slice(&2u64.to_le_bytes());
        string(&mut f, "tokenizer.ggml.model");
        f.extend_from_slice(&8u32.to_le_bytes());
        string(&mut f, "gpt2");
        string(&mut f, "tokenizer.ggml.tokens");
        f.extend_from_slice(&9u32.to_le_bytes());
        f.extend_from_slice(&8u32.to_le_bytes());
        f.extend_from_slice(&2u64.to_le_bytes());
        string(&mut f, "a");
        string(&mut f, "你");
        string(&mut f, "w");
        f.extend_from_slice(&2u32.to_le_bytes());
        f.extend_from_slice(&4u64.to_le_bytes());
        f.extend_from_slice(&3u64.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&64u64.to_le_bytes());
        f
    }

    #[test]
    fn reads_metadata_and_tensors() {
        let g = parse(&sample(), "t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.version, 3);
        assert_eq!(
            g.get("tokenizer.ggml.model").and_then(Value::as_str),
            Some("gpt2")
        );
        let tokens = g
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .unwrap_or_default();
        assert_eq!(
            tokens,
            [Value::String("a".into()), Value::String("你".into())]
        );
        assert_eq!(
            g.tensors,
            [TensorInfo {
                name: "w".into(),
                dims: vec![4, 3],
                ggml_type: 0,
                offset: 64
            }]
        );
        assert_eq!(g.data_offset % 32, 0);
        assert!(g.data_offset >= sample().len() as u64);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let f = sample();
        for n in 0..f.len() {
            let err = parse(&f[..n], "cut.gguf")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains("cut.gguf") && err.contains("GGUF"),
                "{n}: {err}"
            );
        }
    }

    #[test]
    fn lying_lengths_do_not_allocate() {
        let mut f = sample();
        // The first key's length (bytes 24..32) claims 2^60 bytes.
        f[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let err = parse(&f, "lie.gguf")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("more than the"), "{err}");
    }
}
