//! `JiebaSegmenter`: jieba-exact word segmentation (conversion only; the algorithm is
//! `hanpack_core::vocab::segment`). Batches run on the worker pool with the GIL released;
//! only building the Python strings holds it.

use std::collections::HashMap;

use hanpack_core::vocab::segment::{Hmm, JiebaDict, Segmenter, MIN_FLOAT};
use hanpack_core::HanpackError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};
use rayon::prelude::*;

use crate::convert::texts_from_list;
use crate::errors::{run_detached, Failure};
use crate::pool;

type Table = HashMap<String, f64>;
type HmmTables = (Table, HashMap<String, Table>, HashMap<String, Table>);

const STATES: [&str; 4] = ["B", "M", "E", "S"];

fn bad(msg: String) -> Failure {
    Failure::Core(HanpackError::InvalidArgument(msg))
}

/// jieba's `finalseg` tables (`start_P`, `trans_P`, `emit_P`) as dicts keyed by state.
fn hmm_from_tables((start, trans, emit): HmmTables) -> Result<Hmm, Failure> {
    let state = |t: &Table, s: &str, what: &str| {
        t.get(s)
            .copied()
            .ok_or_else(|| bad(format!("HMM {what} has no state {s:?}")))
    };
    let mut h = Hmm {
        start: [0.0; 4],
        trans: [[MIN_FLOAT; 4]; 4],
        emit: Default::default(),
    };
    for (i, s) in STATES.iter().enumerate() {
        h.start[i] = state(&start, s, "start table")?;
        let row = trans
            .get(*s)
            .ok_or_else(|| bad(format!("HMM transition table has no state {s:?}")))?;
        for (j, t) in STATES.iter().enumerate() {
            if let Some(&p) = row.get(*t) {
                h.trans[i][j] = p;
            }
        }
        let em = emit
            .get(*s)
            .ok_or_else(|| bad(format!("HMM emission table has no state {s:?}")))?;
        for (k, &p) in em {
            let mut cs = k.chars();
            match (cs.next(), cs.next()) {
                (Some(c), None) => h.emit.entry(c).or_insert([MIN_FLOAT; 4])[i] = p,
                _ => return Err(bad(format!("HMM emission key {k:?} is not one character"))),
            }
        }
    }
    Ok(h)
}

#[pyclass(frozen, module = "hanpack._core")]
pub struct JiebaSegmenter {
    pub(crate) seg: Segmenter,
}

#[pymethods]
impl JiebaSegmenter {
    /// `dict_text`: a jieba `dict.txt`; `hmm`: `(start_P, trans_P, emit_P)` or None;
    /// `user_dicts`: `(text, origin)` of user dictionaries, applied in order.
    #[new]
    #[pyo3(signature = (dict_text, origin, hmm=None, user_dicts=Vec::new()))]
    fn new(
        py: Python<'_>,
        dict_text: &str,
        origin: &str,
        hmm: Option<HmmTables>,
        user_dicts: Vec<(String, String)>,
    ) -> PyResult<Self> {
        run_detached(py, move || {
            let user: Vec<(&str, &str)> = user_dicts
                .iter()
                .map(|(t, o)| (t.as_str(), o.as_str()))
                .collect();
            let (dict, force_split) = JiebaDict::parse_with_user(dict_text, origin, &user)?;
            let hmm = hmm.map(hmm_from_tables).transpose()?;
            Ok(Self {
                seg: Segmenter::new(dict, hmm, force_split),
            })
        })
    }

    fn has_hmm(&self) -> bool {
        self.seg.has_hmm()
    }

    fn heap_bytes(&self) -> usize {
        self.seg.heap_bytes()
    }

    fn cut<'py>(&self, py: Python<'py>, text: &str, hmm: bool) -> PyResult<Bound<'py, PyList>> {
        let mut out = Vec::new();
        run_detached(py, || Ok(self.seg.cut(text, hmm, &mut out)?))?;
        PyList::new(py, out.into_iter().map(|t| PyString::new(py, t)))
    }

    #[pyo3(signature = (texts, hmm, num_threads=None))]
    fn cut_batch<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyList>,
        hmm: bool,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let texts = texts_from_list(texts)?;
        let seg = &self.seg;
        // Byte ranges per text, made in parallel; the strings are made with the GIL.
        let ranges: Vec<Vec<(usize, usize)>> = run_detached(py, || {
            pool::install(num_threads, || {
                texts
                    .par_iter()
                    .map(|t| {
                        let mut out = Vec::new();
                        seg.cut(t, hmm, &mut out)?;
                        Ok(out
                            .iter()
                            .map(|w| (w.as_ptr() as usize - t.as_ptr() as usize, w.len()))
                            .collect())
                    })
                    .collect::<Result<Vec<_>, HanpackError>>()
            })
            .map_err(Failure::Core)
        })?;
        PyList::new(
            py,
            texts
                .iter()
                .zip(ranges)
                .map(|(t, rs)| {
                    PyList::new(
                        py,
                        rs.into_iter().map(|(s, n)| PyString::new(py, &t[s..s + n])),
                    )
                    .map(Bound::unbind)
                })
                .collect::<PyResult<Vec<_>>>()?,
        )
    }
}
