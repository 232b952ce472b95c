// The interpreter's version and build flags as cfgs (`Py_3_12`, `Py_LIMITED_API`,
// `PyPy`, `Py_GIL_DISABLED`, ...), for the one place that reads CPython's int layout.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
