//! Quantizes one safetensors shard into another, one tensor per [`ShardQuantizer::step`],
//! so memory holds one tensor's input pages and its quantized arrays, never the shard.
//!
//! # The quantized shard (what loaders read)
//!
//! A weight `P.weight` (2-D, F32/F16/BF16, `[out, in]`) chosen for quantization becomes
//! three tensors with the arrays of [`super::formats`]:
//!
//! | tensor      | dtype | shape               |
//! |-------------|-------|---------------------|
//! | `P.qweight` | U8    | `[out, row_bytes]`  |
//! | `P.scales`  | F16   | `[out, n_groups]`   |
//! | `P.zeros`   | F16   | `[out, n_groups]`   |
//!
//! (a name without the `.weight` suffix keeps its full name as `P`). Every other tensor
//! is copied byte for byte, dtype and shape unchanged. The header's `__metadata__` keeps
//! the source's entries and adds `"hanpack.quantized"`: a JSON object mapping each `P`
//! to `{"shape": [out, in], "bits", "group_size", "sym", "method", "packing"}` — enough to rebuild
//! every quantized tensor from this file alone (`in` is not recoverable from `row_bytes`
//! when it is not a multiple of 32). `group_size` is the effective one (`in` for
//! per-channel; a short last group when `in` is not a multiple of it).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use half::{bf16, f16};

use super::stats::{error_stats, ErrorStats};
use super::{check_importance, quantize, Element, Layout, Method, QuantSpec, QuantizedTensor};
use crate::error::{HanpackError, Result};
use crate::io::safetensors::{dtype_name, elements, Dtype, SafetensorsFile, TensorEntry};
use crate::io::safetensors_writer::{PlannedTensor, SafetensorsWriter};

/// The `__metadata__` key listing a shard's quantized tensors.
pub const METADATA_KEY: &str = "hanpack.quantized";

/// The names `P.qweight`, `P.scales`, `P.zeros` of weight `name`.
pub fn quantized_names(name: &str) -> [String; 3] {
    let p = name.strip_suffix(".weight").unwrap_or(name);
    [
        format!("{p}.qweight"),
        format!("{p}.scales"),
        format!("{p}.zeros"),
    ]
}

/// What one step did.
#[derive(Clone, Debug)]
pub struct TensorOutcome {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// `None`: copied unchanged.
    pub quantized: Option<(Layout, ErrorStats)>,
}

/// A weight's arrays computed elsewhere (method [`Method::Learned`]), written in place of
/// quantizing it; checked against the layout the source tensor gets.
#[derive(Clone, Debug)]
pub struct GivenTensor {
    pub packed: Vec<u8>,
    pub scales: Vec<f16>,
    pub zeros: Vec<f16>,
}

pub struct ShardQuantizer {
    src: SafetensorsFile,
    writer: Option<SafetensorsWriter>,
    /// Source entry indices in file order, each with its layout when quantized.
    work: Vec<(usize, Option<Layout>)>,
    next: usize,
    spec: QuantSpec,
    /// Per-column weights of the squared error (`Method::Mse`), by tensor name.
    importance: HashMap<String, Vec<f32>>,
    /// Method `Learned`: every chosen tensor's arrays, taken out as it is written.
    given: HashMap<String, QuantizedTensor>,
}

impl ShardQuantizer {
    /// Opens `src`, checks that every tensor of `to_quantize` exists and can be quantized
    /// with `spec`, and creates `dst` (which must not exist) with its full header.
    /// `metadata` is added to the source's `__metadata__`. `importance` gives tensors
    /// of `to_quantize` per-column error weights (see [`quantize`]); each is checked here,
    /// before anything is written. `given` (method `Learned` only, then one for each
    /// tensor of `to_quantize`) holds arrays to write instead of quantizing.
    pub fn new(
        src: &Path,
        dst: &Path,
        to_quantize: &[String],
        spec: QuantSpec,
        metadata: &HashMap<String, String>,
        importance: HashMap<String, Vec<f32>>,
        mut given: HashMap<String, GivenTensor>,
    ) -> Result<Self> {
        if !given.is_empty() && spec.method != Method::Learned {
            return Err(HanpackError::InvalidArgument(format!(
                "given arrays are only written for method \"learned\", not {:?}",
                spec.method.name()
            )));
        }
        if !importance.is_empty() && spec.method != Method::Mse {
            return Err(HanpackError::InvalidArgument(format!(
                "an importance is only used by method \"mse\", not {:?}",
                spec.method.name()
            )));
        }
        let src = SafetensorsFile::open(src)?;
        let chosen: HashSet<&str> = to_quantize.iter().map(String::as_str).collect();
        if let Some(missing) = to_quantize.iter().find(|n| src.entry(n).is_none()) {
            return Err(HanpackError::InvalidArgument(format!(
                "{}: no tensor {missing:?} to quantize",
                src.path().display()
            )));
        }
        let mut work = Vec::with_capacity(src.entries().len());
        let mut plan = Vec::with_capacity(src.entries().len() + 2 * to_quantize.len());
        let mut described = serde_json::Map::new();
        let mut learned = HashMap::new();
        for (i, e) in src.entries().iter().enumerate() {
            if !chosen.contains(e.name.as_str()) {
                plan.push(PlannedTensor {
                    name: e.name.clone(),
                    dtype: e.dtype,
                    shape: e.shape.clone(),
                });
                work.push((i, None));
                continue;
            }
            let layout = quantizable(e, &spec)?;
            if let Some(imp) = importance.get(&e.name) {
                check_importance(&e.name, imp, layout.cols, "importance")?;
            }
            if spec.method == Method::Learned {
                let g = given
                    .remove(&e.name)
                    .ok_or_else(|| HanpackError::Quantization {
                        tensor: e.name.clone(),
                        reason: "method \"learned\" needs its arrays, and none are given".into(),
                    })?;
                let refuse = |reason: String| HanpackError::Quantization {
                    tensor: e.name.clone(),
                    reason,
                };
                layout
                    .check(g.packed.len(), g.scales.len(), g.zeros.len())
                    .map_err(|err| refuse(format!("the given arrays do not fit: {err}")))?;
                if let Some(i) = g.scales.iter().chain(&g.zeros).position(|h| !h.is_finite()) {
                    let what = if i < g.scales.len() { "scale" } else { "zero" };
                    return Err(refuse(format!("a given {what} is not finite")));
                }
                learned.insert(
                    e.name.clone(),
                    QuantizedTensor {
                        layout,
                        sym: spec.sym,
                        packed: g.packed,
                        scales: g.scales,
                        zeros: g.zeros,
                    },
                );
            }
            let [qw, sc, ze] = quantized_names(&e.name);
            let (rows, rb, ng) = (layout.rows, layout.row_bytes(), layout.n_groups());
            plan.push(PlannedTensor {
                name: qw,
                dtype: Dtype::U8,
                shape: vec![rows, rb],
            });
            plan.push(PlannedTensor {
                name: sc,
                dtype: Dtype::F16,
                shape: vec![rows, ng],
            });
            plan.push(PlannedTensor {
                name: ze,
                dtype: Dtype::F16,
                shape: vec![rows, ng],
            });
            let prefix = e
                .name
                .strip_suffix(".weight")
                .unwrap_or(&e.name)
                .to_string();
            described.insert(
                prefix,
                serde_json::json!({
                    "shape": [layout.rows, layout.cols],
                    "bits": layout.bits.get(),
                    "group_size": layout.group_size,
                    "sym": spec.sym,
                    "method": spec.method.name(),
                    "packing": super::formats::PACKING,
                }),
            );
            work.push((i, Some(layout)));
        }
        if let Some(stray) = given.keys().next() {
            return Err(HanpackError::InvalidArgument(format!(
                "{}: arrays are given for {stray:?}, which is not a tensor being quantized",
                src.path().display()
            )));
        }
        if let Some(stray) = importance.keys().find(|n| !chosen.contains(n.as_str())) {
            return Err(HanpackError::InvalidArgument(format!(
                "{}: an importance is given for {stray:?}, which is not a tensor being quantized",
                src.path().display()
            )));
        }
        let mut seen = HashSet::with_capacity(plan.len());
        if let Some(dup) = plan.iter().find(|t| !seen.insert(t.name.as_str())) {
            return Err(HanpackError::InvalidArgument(format!(
                "{}: output tensor {:?} would be written twice (the source already has a tensor of that name)",
                src.path().display(),
                dup.name
            )));
        }
        let mut meta = src.metadata().clone();
        meta.extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        if !described.is_empty() {
            meta.insert(
                METADATA_KEY.into(),
                serde_json::Value::Object(described).to_string(),
            );
        }
        let writer = SafetensorsWriter::create(dst, &plan, &meta)?;
        Ok(Self {
            src,
            writer: Some(writer),
            work,
            next: 0,
            spec,
            importance,
            given: learned,
        })
    }

    /// The source tensors in the order they are processed, each with its layout when it
    /// is to be quantized.
    pub fn work(&self) -> impl Iterator<Item = (&TensorEntry, Option<&Layout>)> {
        self.work
            .iter()
            .map(|(i, l)| (&self.src.entries()[*i], l.as_ref()))
    }

    /// Processes the next tensor; `None` when all are done.
    pub fn step(&mut self) -> Result<Option<TensorOutcome>> {
        let Some(&(i, layout)) = self.work.get(self.next) else {
            return Ok(None);
        };
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| HanpackError::InvalidArgument("the shard is already finished".into()))?;
        let e = &self.src.entries()[i];
        let bytes = self.src.bytes(e);
        let outcome = match layout {
            None => {
                writer.write(&e.name, bytes)?;
                TensorOutcome {
                    name: e.name.clone(),
                    dtype: e.dtype,
                    shape: e.shape.clone(),
                    quantized: None,
                }
            }
            Some(layout) => {
                let imp = self.importance.get(&e.name).map(Vec::as_slice);
                let given = self.given.remove(&e.name);
                let (q, stats) = match e.dtype {
                    Dtype::F32 => quantize_with_stats(
                        &e.name,
                        &elements::<f32>(bytes),
                        &layout,
                        &self.spec,
                        imp,
                        given,
                    )?,
                    Dtype::F16 => quantize_with_stats(
                        &e.name,
                        &elements::<f16>(bytes),
                        &layout,
                        &self.spec,
                        imp,
                        given,
                    )?,
                    _ => quantize_with_stats(
                        &e.name,
                        &elements::<bf16>(bytes),
                        &layout,
                        &self.spec,
                        imp,
                        given,
                    )?,
                };
                let [qw, sc, ze] = quantized_names(&e.name);
                writer.write(&qw, &q.packed)?;
                writer.write(&sc, &half_bytes(&q.scales))?;
                writer.write(&ze, &half_bytes(&q.zeros))?;
                TensorOutcome {
                    name: e.name.clone(),
                    dtype: e.dtype,
                    shape: e.shape.clone(),
                    quantized: Some((layout, stats)),
                }
            }
        };
        self.src.release(e);
        self.next += 1;
        Ok(Some(outcome))
    }

    /// Checks that every tensor was processed and syncs the output to disk.
    pub fn finish(&mut self) -> Result<()> {
        if self.next < self.work.len() {
            return Err(HanpackError::InvalidArgument(format!(
                "{} of {} tensors are not processed yet",
                self.work.len() - self.next,
                self.work.len()
            )));
        }
        match self.writer.take() {
            Some(w) => w.finish(),
            None => Ok(()),
        }
    }
}

/// The layout `e` gets under `spec`, or why it cannot be quantized.
fn quantizable(e: &TensorEntry, spec: &QuantSpec) -> Result<Layout> {
    let refuse = |reason: String| HanpackError::Quantization {
        tensor: e.name.clone(),
        reason,
    };
    if !matches!(e.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
        return Err(refuse(format!(
            "dtype {} cannot be quantized (only F32, F16 and BF16 weights)",
            dtype_name(e.dtype)
        )));
    }
    let [rows, cols] = e.shape[..] else {
        return Err(refuse(format!(
            "shape {:?} is not a 2-D [out_features, in_features] weight",
            e.shape
        )));
    };
    Layout::new(spec.bits, rows, cols, spec.group_size).map_err(|err| refuse(err.to_string()))
}

fn quantize_with_stats<T: Element>(
    name: &str,
    w: &[T],
    layout: &Layout,
    spec: &QuantSpec,
    importance: Option<&[f32]>,
    given: Option<QuantizedTensor>,
) -> Result<(QuantizedTensor, ErrorStats)> {
    let q = match given {
        Some(q) => q,
        None => quantize(name, w, layout.rows, layout.cols, spec, importance)?,
    };
    let stats = error_stats(w, &q);
    Ok((q, stats))
}

fn half_bytes(v: &[f16]) -> Vec<u8> {
    v.iter().flat_map(|h| h.to_bits().to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{formats, Bits};

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("hanpack-ckpt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn source(path: &Path) -> Vec<f32> {
        let w: Vec<f32> = (0..6 * 70)
            .map(|i| ((i * 31 % 97) as f32 - 48.0) / 40.0)
            .collect();
        let plan = vec![
            PlannedTensor {
                name: "layer.weight".into(),
                dtype: Dtype::F32,
                shape: vec![6, 70],
            },
            PlannedTensor {
                name: "norm.weight".into(),
                dtype: Dtype::BF16,
                shape: vec![4],
            },
            PlannedTensor {
                name: "ids".into(),
                dtype: Dtype::I64,
                shape: vec![2],
            },
        ];
        let mut wr = SafetensorsWriter::create(
            path,
            &plan,
            &HashMap::from([("format".into(), "pt".into())]),
        )
        .unwrap();
        wr.write(
            "layer.weight",
            &w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
        )
        .unwrap();
        wr.write("norm.weight", &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        wr.write("ids", &[9; 16]).unwrap();
        wr.finish().unwrap();
        w
    }

    fn int3_g32(method: Method) -> QuantSpec {
        QuantSpec {
            bits: Bits::B3,
            group_size: Some(32),
            sym: false,
            method,
        }
    }

    /// `ShardQuantizer::new` on `d/in.safetensors` (written by `source`) into `d/dst`.
    fn open(
        d: &Path,
        dst: &str,
        names: &[&str],
        spec: QuantSpec,
        importance: HashMap<String, Vec<f32>>,
        given: HashMap<String, GivenTensor>,
    ) -> Result<ShardQuantizer> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        ShardQuantizer::new(
            &d.join("in.safetensors"),
            &d.join(dst),
            &names,
            spec,
            &HashMap::new(),
            importance,
            given,
        )
    }

    #[test]
    fn quantizes_chosen_tensors_and_copies_the_rest() {
        let d = dir("ok");
        let w = source(&d.join("in.safetensors"));
        let spec = QuantSpec {
            bits: Bits::B4,
            group_size: Some(32),
            sym: false,
            method: Method::Hqq,
        };
        let mut job = open(
            &d,
            "out.safetensors",
            &["layer.weight"],
            spec,
            HashMap::new(),
            HashMap::new(),
        )
        .unwrap();
        let mut seen = vec![];
        while let Some(o) = job.step().unwrap() {
            seen.push((o.name, o.quantized.is_some()));
        }
        job.finish().unwrap();
        assert_eq!(seen.len(), 3);
        let out = SafetensorsFile::open(&d.join("out.safetensors")).unwrap();
        let copied = out.entry("norm.weight").unwrap();
        assert_eq!(out.bytes(copied), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(out.bytes(out.entry("ids").unwrap()), &[9; 16]);
        let meta: serde_json::Value = serde_json::from_str(&out.metadata()[METADATA_KEY]).unwrap();
        assert_eq!(meta["layer"]["shape"], serde_json::json!([6, 70]));
        assert_eq!(out.metadata()["format"], "pt");
        // The stored arrays are exactly what quantize() makes.
        let q = quantize("layer.weight", &w, 6, 70, &spec, None).unwrap();
        assert_eq!(
            out.bytes(out.entry("layer.qweight").unwrap()),
            &q.packed[..]
        );
        assert_eq!(
            out.bytes(out.entry("layer.scales").unwrap()),
            &half_bytes(&q.scales)[..]
        );
        assert_eq!(out.entry("layer.zeros").unwrap().shape, vec![6, 3]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refuses_what_cannot_be_quantized() {
        let d = dir("refuse");
        source(&d.join("in.safetensors"));
        let spec = QuantSpec {
            bits: Bits::B4,
            group_size: Some(64),
            sym: false,
            method: Method::Rtn,
        };
        let cases = [
            ("ids", "dtype I64"),
            ("norm.weight", "not a 2-D"),
            ("nothing", "no tensor"),
        ];
        for (name, want) in cases {
            let err = open(
                &d,
                &format!("{name}.out"),
                &[name],
                spec,
                HashMap::new(),
                HashMap::new(),
            )
            .err()
            .unwrap();
            assert!(err.to_string().contains(want), "{err}");
            assert!(!d.join(format!("{name}.out")).exists());
        }
        let exists = open(
            &d,
            "in.safetensors",
            &[],
            spec,
            HashMap::new(),
            HashMap::new(),
        )
        .err()
        .unwrap();
        assert!(matches!(exists, HanpackError::IoWrite { .. }), "{exists}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_importance_weights_its_tensor_and_is_checked_first() {
        let d = dir("importance");
        let w = source(&d.join("in.safetensors"));
        let spec = int3_g32(Method::Mse);
        let imp: Vec<f32> = (0..70)
            .map(|c| if c % 7 == 0 { 50.0 } else { 0.5 })
            .collect();
        let importance = HashMap::from([("layer.weight".to_string(), imp.clone())]);
        let mut job = open(
            &d,
            "out.safetensors",
            &["layer.weight"],
            spec,
            importance,
            HashMap::new(),
        )
        .unwrap();
        while job.step().unwrap().is_some() {}
        job.finish().unwrap();
        let out = SafetensorsFile::open(&d.join("out.safetensors")).unwrap();
        let weighted = quantize("layer.weight", &w, 6, 70, &spec, Some(&imp)).unwrap();
        let plain = quantize("layer.weight", &w, 6, 70, &spec, None).unwrap();
        assert_ne!(weighted.scales, plain.scales);
        assert_eq!(
            out.bytes(out.entry("layer.scales").unwrap()),
            &half_bytes(&weighted.scales)[..]
        );
        assert_eq!(
            out.bytes(out.entry("layer.qweight").unwrap()),
            &weighted.packed[..]
        );
        let cases = [
            (spec, "layer.weight", vec![1.0; 69], "69 entries"),
            (spec, "layer.weight", vec![-1.0; 70], "non-negative"),
            (
                spec,
                "norm.weight",
                vec![1.0; 4],
                "not a tensor being quantized",
            ),
            (
                QuantSpec {
                    method: Method::Hqq,
                    ..spec
                },
                "layer.weight",
                vec![1.0; 70],
                "only used by method",
            ),
        ];
        for (i, (spec, name, imp, want)) in cases.into_iter().enumerate() {
            let dst = format!("bad{i}.out");
            let importance = HashMap::from([(name.to_string(), imp)]);
            let err = open(
                &d,
                &dst,
                &["layer.weight"],
                spec,
                importance,
                HashMap::new(),
            )
            .err()
            .unwrap();
            assert!(err.to_string().contains(want), "{err}");
            assert!(!d.join(dst).exists());
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn given_arrays_are_written_for_method_learned_and_checked_first() {
        let d = dir("given");
        let w = source(&d.join("in.safetensors"));
        let spec = int3_g32(Method::Learned);
        // Codes no built-in method would choose: a pattern, with its own scales and zeros.
        let layout = Layout::new(Bits::B3, 6, 70, Some(32)).unwrap();
        let codes: Vec<u8> = (0..6 * 70).map(|i| (i * 5 % 8) as u8).collect();
        let given = GivenTensor {
            packed: formats::pack_codes(&layout, &codes).unwrap(),
            scales: (0..18)
                .map(|i| f16::from_f32(0.01 * (i + 1) as f32))
                .collect(),
            zeros: (0..18)
                .map(|i| f16::from_f32(3.5 - 0.1 * i as f32))
                .collect(),
        };
        let gmap = |g: &GivenTensor| HashMap::from([("layer.weight".to_string(), g.clone())]);
        let mut job = open(
            &d,
            "out.safetensors",
            &["layer.weight"],
            spec,
            HashMap::new(),
            gmap(&given),
        )
        .unwrap();
        let mut stats = None;
        while let Some(o) = job.step().unwrap() {
            stats = stats.or(o.quantized.map(|(_, s)| s));
        }
        job.finish().unwrap();
        let out = SafetensorsFile::open(&d.join("out.safetensors")).unwrap();
        let bytes = |n: &str| out.bytes(out.entry(n).unwrap()).to_vec();
        assert_eq!(bytes("layer.qweight"), given.packed);
        assert_eq!(bytes("layer.scales"), half_bytes(&given.scales));
        assert_eq!(bytes("layer.zeros"), half_bytes(&given.zeros));
        assert!(out.metadata()[METADATA_KEY].contains("\"method\":\"learned\""));
        // The error statistics compare the given arrays with the source weight.
        let q = QuantizedTensor {
            layout,
            sym: false,
            packed: given.packed.clone(),
            scales: given.scales.clone(),
            zeros: given.zeros.clone(),
        };
        assert_eq!(stats.unwrap().sq_error, error_stats(&w, &q).sq_error);
        assert!(quantize("layer.weight", &w, 6, 70, &spec, None)
            .unwrap_err()
            .to_string()
            .contains("given, not computed"));

        let short = GivenTensor {
            scales: given.scales[1..].to_vec(),
            ..given.clone()
        };
        let mut nan = given.clone();
        nan.zeros[4] = f16::NAN;
        let hqq = QuantSpec {
            method: Method::Hqq,
            ..spec
        };
        let cases = [
            (spec, HashMap::new(), "none are given"),
            (spec, gmap(&short), "do not fit"),
            (spec, gmap(&nan), "zero is not finite"),
            (hqq, gmap(&given), "only written for method"),
        ];
        for (i, (spec, given, want)) in cases.into_iter().enumerate() {
            let dst = format!("bad{i}.out");
            let err = open(&d, &dst, &["layer.weight"], spec, HashMap::new(), given)
                .err()
                .unwrap();
            assert!(err.to_string().contains(want), "{err}");
            assert!(!d.join(dst).exists());
        }
        let stray = HashMap::from([("norm.weight".to_string(), given.clone())]);
        let err = open(&d, "stray.out", &[], spec, HashMap::new(), stray)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("not a tensor being quantized"),
            "{err}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
