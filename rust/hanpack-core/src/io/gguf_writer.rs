//! The writing half of [`super::gguf`]: a GGUF v3 header (magic, counts, metadata,
//! tensor descriptions, padding) with every tensor's data offset laid out in advance, so
//! that tensor data can then be streamed one tensor at a time (each padded to the
//! alignment) without holding a model in memory.

use super::gguf::Value;
use crate::error::{HanpackError, Result};

/// One tensor as the header describes it.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (numpy's last axis).
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Bytes of data (before padding).
    pub nbytes: u64,
}

/// An encoded header and where each tensor's data goes, relative to the end of it.
pub struct Header {
    pub bytes: Vec<u8>,
    pub offsets: Vec<u64>,
}

fn bad(msg: String) -> HanpackError {
    HanpackError::InvalidArgument(format!("GGUF writer: {msg}"))
}

fn type_code(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn value(out: &mut Vec<u8>, v: &Value, key: &str) -> Result<()> {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => string(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(items) => {
            // The element type is written once, so it must be known and shared.
            let Some(first) = items.first() else {
                return Err(bad(format!("{key:?} is an empty array (no element type)")));
            };
            let elem = type_code(first);
            if let Some(other) = items.iter().find(|i| type_code(i) != elem) {
                return Err(bad(format!(
                    "{key:?} mixes element types {elem} and {}",
                    type_code(other)
                )));
            }
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                value(out, i, key)?;
            }
        }
    }
    Ok(())
}

/// Pads `n` up to a multiple of `alignment` (a power of two).
pub fn padded(n: u64, alignment: u64) -> u64 {
    n.div_ceil(alignment) * alignment
}

/// Encodes the header. `alignment` must be a power of two and equal `general.alignment`
/// when the metadata has that key (llama.cpp reads it from there; 32 when absent).
pub fn encode_header(
    metadata: &[(String, Value)],
    tensors: &[TensorEntry],
    alignment: u64,
) -> Result<Header> {
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(bad(format!("alignment {alignment} is not a power of two")));
    }
    let declared = metadata
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .map(|(_, v)| v.as_i64());
    match declared {
        None if alignment != 32 => {
            return Err(bad(format!(
                "alignment {alignment} needs a general.alignment entry"
            )))
        }
        Some(a) if a != Some(alignment as i64) => {
            return Err(bad(format!(
                "general.alignment is {a:?}, the layout uses {alignment}"
            )))
        }
        _ => {}
    }
    let mut seen = std::collections::HashSet::new();
    for (k, _) in metadata {
        if !seen.insert(k.as_str()) {
            return Err(bad(format!("metadata key {k:?} appears twice")));
        }
    }
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        string(&mut out, k);
        out.extend_from_slice(&type_code(v).to_le_bytes());
        value(&mut out, v, k)?;
    }
    let mut names = std::collections::HashSet::new();
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for t in tensors {
        if !names.insert(t.name.as_str()) {
            return Err(bad(format!("tensor {:?} appears twice", t.name)));
        }
        if t.dims.is_empty() || t.dims.len() > 4 {
            return Err(bad(format!(
                "tensor {:?} has {} dimensions (ggml allows 1 to 4)",
                t.name,
                t.dims.len()
            )));
        }
        string(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ggml_type.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset += padded(t.nbytes, alignment);
    }
    out.resize(padded(out.len() as u64, alignment) as usize, 0);
    Ok(Header {
        bytes: out,
        offsets,
    })
}

#[cfg(test)]
mod tests {
    use super::super::gguf::{parse, TensorInfo};
    use super::*;

    #[test]
    fn the_reader_reads_what_the_writer_writes() {
        let metadata = vec![
            (
                "general.architecture".to_string(),
                Value::String("llama".into()),
            ),
            ("llama.block_count".to_string(), Value::U32(5)),
            (
                "tokenizer.ggml.tokens".to_string(),
                Value::Array(vec![
                    Value::String("<s>".into()),
                    Value::String("你".into()),
                ]),
            ),
            (
                "tokenizer.ggml.scores".to_string(),
                Value::Array(vec![Value::F32(0.0), Value::F32(-1.5)]),
            ),
            (
                "tokenizer.ggml.add_bos_token".to_string(),
                Value::Bool(true),
            ),
        ];
        let tensors = vec![
            TensorEntry {
                name: "token_embd.weight".into(),
                dims: vec![64, 512],
                ggml_type: 8,
                nbytes: 512 * 68,
            },
            TensorEntry {
                name: "output_norm.weight".into(),
                dims: vec![64],
                ggml_type: 0,
                nbytes: 256,
            },
        ];
        let h = encode_header(&metadata, &tensors, 32).unwrap();
        assert_eq!(h.bytes.len() % 32, 0);
        assert_eq!(h.offsets, [0, padded(512 * 68, 32)]);
        let g = parse(&h.bytes, "w").unwrap();
        assert_eq!(g.metadata, metadata);
        assert_eq!(g.data_offset, h.bytes.len() as u64);
        assert_eq!(
            g.tensors[1],
            TensorInfo {
                name: "output_norm.weight".into(),
                dims: vec![64],
                ggml_type: 0,
                offset: h.offsets[1],
            }
        );
    }

    #[test]
    fn inconsistent_headers_are_errors() {
        let t = |name: &str| TensorEntry {
            name: name.into(),
            dims: vec![32],
            ggml_type: 0,
            nbytes: 128,
        };
        let empty = vec![("a".to_string(), Value::Array(vec![]))];
        assert!(encode_header(&empty, &[], 32).is_err());
        let mixed = vec![(
            "a".to_string(),
            Value::Array(vec![Value::U32(1), Value::I32(1)]),
        )];
        assert!(encode_header(&mixed, &[], 32).is_err());
        assert!(encode_header(&[], &[t("x"), t("x")], 32).is_err());
        assert!(encode_header(&[], &[t("x")], 64).is_err());
        assert!(encode_header(&[], &[t("x")], 48).is_err());
        let twice = vec![
            ("k".to_string(), Value::U8(1)),
            ("k".to_string(), Value::U8(2)),
        ];
        assert!(encode_header(&twice, &[], 32).is_err());
    }
}
