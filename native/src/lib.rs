//! `streamdrift_kernels`: the detectors' per-value loops in Rust, called by
//! `streamdrift.detectors.kernels` (the compiled backend) with whole batches of values.
//!
//! They replaced numba kernels (`detectors/kernels/*.py` until commit 4d4679a: a worker without
//! numba and LLVM holds ~100 MB less; docs/performance.md, "Decision: compiled kernels"). Every
//! function takes the same arguments in the same order, of the same dtypes, returns the same
//! values and writes the same arrays in place as the numba function it replaced, with the same
//! floating-point operations in the same order (no fast-math, no FMA), so results are
//! bit-identical to them and to the reference backend (river's ADWIN and Page-Hinkley, numpy's
//! passes; `tests/detectors/test_kernels.py`). Where the numba code (default
//! `error_model="python"`) raised `ZeroDivisionError` on a division by zero, these raise it too,
//! after the same in-place writes.
//!
//! What differs is what numba would do on input it cannot handle: instead of reading or writing
//! out of bounds, these raise `ValueError` (wrong lengths or shapes, non-contiguous, misaligned
//! or read-only arrays where the kernel writes, array arguments sharing memory with one that
//! is written, a restored state whose bucket counts point outside the arrays) and `TypeError`
//! (wrong dtype or number of dimensions). Shapes and layouts are checked before anything is
//! written; a state found to point outside its arrays mid-batch raises where numba would have
//! gone out of bounds, after the writes numba would have made up to there.
//!
//! The pure kernels work on slices (`Result<_, KernelError>`), the `#[pyfunction]` wrappers in
//! each module check and borrow the numpy arrays.

use numpy::ndarray::Dimension;
use numpy::npyffi::{_PyArray_GET_ITEM_DATA, NPY_ARRAY_WRITEABLE};
use numpy::prelude::*;
use numpy::{Element, PyArray};
use pyo3::exceptions::{PyValueError, PyZeroDivisionError};
use pyo3::prelude::*;

mod adwin;
mod cusum;
mod decode;
mod fused;
mod moments;
mod page_hinkley;
mod windows;

/// Why a kernel stopped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KernelError {
    /// What numba raises as `ZeroDivisionError` (its message).
    ZeroDivision(&'static str),
    /// An index outside an array, where numba would read or write out of bounds.
    OutOfBounds(String),
}

impl From<KernelError> for PyErr {
    fn from(error: KernelError) -> PyErr {
        match error {
            KernelError::ZeroDivision(message) => PyZeroDivisionError::new_err(message),
            KernelError::OutOfBounds(message) => PyValueError::new_err(message),
        }
    }
}

pub(crate) type KResult<T> = Result<T, KernelError>;

/// numba's float `a / b`: `ZeroDivisionError` when `b` is zero (ordered compare: a NaN
/// divisor divides), else the IEEE quotient.
#[inline(always)]
pub(crate) fn div(a: f64, b: f64) -> KResult<f64> {
    if b == 0.0 {
        Err(KernelError::ZeroDivision("division by zero"))
    } else {
        Ok(a / b)
    }
}

/// Python's (and numba's) builtin `min(a, b)`: `b if b < a else a`. Unlike `f64::min`, a NaN
/// `a` is returned as is, a NaN `b` never, and of two zeros the first is returned.
#[inline(always)]
pub(crate) fn py_min<T: PartialOrd>(a: T, b: T) -> T {
    if b < a {
        b
    } else {
        a
    }
}

/// Python's (and numba's) builtin `max(a, b)`: `b if b > a else a` (see [`py_min`]).
#[inline(always)]
pub(crate) fn py_max<T: PartialOrd>(a: T, b: T) -> T {
    if b > a {
        b
    } else {
        a
    }
}

/// numba's `int(x)` of a float64: LLVM `fptosi`, truncation toward zero. Undefined in LLVM
/// for NaN and values outside the int64 range; x86-64's `cvttsd2si`, which numba's code runs,
/// gives `i64::MIN` for those, and so does this (Rust's `as` would saturate instead).
#[inline(always)]
pub(crate) fn py_int(x: f64) -> i64 {
    if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&x) {
        x as i64
    } else {
        i64::MIN
    }
}

fn layout_error(name: &str) -> PyErr {
    PyValueError::new_err(format!(
        "{name} must be a C-contiguous, aligned array (numpy.ascontiguousarray)"
    ))
}

/// Where one array argument lies in memory.
#[derive(Clone, Copy, Default)]
struct Span {
    name: &'static str,
    start: usize,
    end: usize,
    written: bool,
}

/// The array arguments of one call, as their slices are made: each is checked to be
/// C-contiguous and aligned (and writeable, if the kernel writes it), and an array the kernel
/// writes may not share memory with any other array argument (`ValueError` otherwise).
///
/// This replaces the numpy crate's dynamic borrow flags (`readonly()` / `readwrite()`), which
/// cost ~65 ns per array and call (600 ns of a 9-array ADWIN call on one value, more than the
/// kernel itself); see `input` / `output` for why the slices made here are sound.
pub(crate) struct Arrays {
    spans: [Span; 12],
    len: usize,
}

impl Arrays {
    pub(crate) fn new() -> Self {
        Arrays {
            spans: [Span::default(); 12],
            len: 0,
        }
    }

    fn add<T: Element, D: Dimension>(
        &mut self,
        name: &'static str,
        array: &Bound<'_, PyArray<T, D>>,
        written: bool,
    ) -> PyResult<()> {
        let len = array.len();
        if len != 0 && !(array.is_c_contiguous() && array.is_aligned()) {
            return Err(layout_error(name));
        }
        if written {
            // SAFETY: `array` is a live numpy array (its type was checked when the argument was
            // extracted) and the GIL is held: its fields can be read.
            let flags = unsafe { (*_PyArray_GET_ITEM_DATA(array.as_array_ptr())).flags };
            if flags & NPY_ARRAY_WRITEABLE == 0 {
                return Err(PyValueError::new_err(format!(
                    "{name} is read-only: the kernel writes it in place"
                )));
            }
        }
        let start = array.data() as usize;
        let end = start + len * std::mem::size_of::<T>();
        for other in &self.spans[..self.len] {
            if (written || other.written) && start < other.end && other.start < end {
                return Err(PyValueError::new_err(format!(
                    "{name} and {} share memory, and the kernel writes {}",
                    other.name,
                    if written { name } else { other.name }
                )));
            }
        }
        if self.len == self.spans.len() {
            return Err(PyValueError::new_err("too many array arguments"));
        }
        self.spans[self.len] = Span {
            name,
            start,
            end,
            written,
        };
        self.len += 1;
        Ok(())
    }

    /// The slice of an array the kernel only reads.
    pub(crate) fn input<'a, T: Element, D: Dimension>(
        &mut self,
        name: &'static str,
        array: &'a Bound<'_, PyArray<T, D>>,
    ) -> PyResult<&'a [T]> {
        self.add(name, array, false)?;
        // SAFETY: the array's memory is not written through any other argument of this call
        // (checked by `add`, before any mutable slice overlapping it could be made). The GIL
        // is held for the whole call and the kernels run no Python code, so neither Python
        // code nor another thread can write the array while the slice (which lives no longer
        // than the argument, i.e. the call) is in use. `as_slice` itself refuses a
        // non-contiguous or misaligned array. (Not covered: another Rust extension holding a
        // numpy-crate `readwrite()` borrow of the same array while Python calls this one.)
        unsafe { array.as_slice() }.map_err(|_| layout_error(name))
    }

    /// The mutable slice of an array the kernel writes in place. (A `&mut` from a shared
    /// reference, as the numpy crate's own `as_slice_mut(&self)`: its uniqueness comes from
    /// the checks in `add`, not from the borrow of `array`.)
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn output<'a, T: Element, D: Dimension>(
        &mut self,
        name: &'static str,
        array: &'a Bound<'_, PyArray<T, D>>,
    ) -> PyResult<&'a mut [T]> {
        self.add(name, array, true)?;
        // SAFETY: as for `input`; in addition no other array argument of this call shares
        // any byte with this one (checked by `add` against every argument before and, as they
        // are added, after it), so this is the only reference to its memory, and the array is
        // writeable.
        unsafe { array.as_slice_mut() }.map_err(|_| layout_error(name))
    }
}

/// `ValueError` unless `array` has exactly `expected` elements.
pub(crate) fn exact_len<T>(name: &str, array: &[T], expected: usize) -> PyResult<()> {
    if array.len() != expected {
        return Err(PyValueError::new_err(format!(
            "{name} must have {expected} elements, not {}",
            array.len()
        )));
    }
    Ok(())
}

/// `array` as a fixed-size array; `ValueError` unless it has exactly `N` elements.
pub(crate) fn fixed<'a, T, const N: usize>(name: &str, array: &'a [T]) -> PyResult<&'a [T; N]> {
    exact_len(name, array, N)?;
    array
        .try_into()
        .map_err(|_| PyValueError::new_err(format!("{name}: {N} elements")))
}

/// `array` as a mutable fixed-size array; `ValueError` unless it has exactly `N` elements.
pub(crate) fn fixed_mut<'a, T, const N: usize>(
    name: &str,
    array: &'a mut [T],
) -> PyResult<&'a mut [T; N]> {
    exact_len(name, array, N)?;
    array
        .try_into()
        .map_err(|_| PyValueError::new_err(format!("{name}: {N} elements")))
}

/// `ValueError` unless `array` has at least `needed` elements.
pub(crate) fn min_len<T>(name: &str, array: &[T], needed: usize, what: &str) -> PyResult<()> {
    if array.len() < needed {
        return Err(PyValueError::new_err(format!(
            "{name} has {} elements, fewer than {what} ({needed})",
            array.len()
        )));
    }
    Ok(())
}

/// The interface version `streamdrift.detectors.kernels.API_VERSION` expects: raised whenever a
/// function's arguments or results change, so that a build left from another checkout is not
/// called with arguments it does not take.
pub const API_VERSION: u32 = 3;

/// The module: one function per kernel that `streamdrift.detectors.kernels` calls.
#[pymodule]
fn streamdrift_kernels(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("API_VERSION", API_VERSION)?;
    m.add_function(wrap_pyfunction!(adwin::adwin_update_batch, m)?)?;
    m.add_function(wrap_pyfunction!(cusum::cusum_scan, m)?)?;
    m.add_function(wrap_pyfunction!(moments::moments, m)?)?;
    m.add_function(wrap_pyfunction!(
        page_hinkley::page_hinkley_update_batch,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(windows::cdf_gaps, m)?)?;
    m.add_function(wrap_pyfunction!(windows::pool_small, m)?)?;
    m.add_function(wrap_pyfunction!(windows::pool_counts, m)?)?;
    m.add_function(wrap_pyfunction!(windows::chi_square_terms, m)?)?;
    m.add_function(wrap_pyfunction!(windows::psi_parts, m)?)?;
    m.add_function(wrap_pyfunction!(windows::add_to_bins, m)?)?;
    m.add_function(wrap_pyfunction!(decode::decode_prediction_columns, m)?)?;
    m.add_function(wrap_pyfunction!(fused::split_moments, m)?)?;
    m.add_function(wrap_pyfunction!(fused::fill_period, m)?)?;
    m.add_function(wrap_pyfunction!(fused::numeric_detect, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_min_max() {
        let nan = f64::NAN;
        assert!(py_min(nan, 1.0).is_nan());
        assert_eq!(py_min(1.0, nan), 1.0);
        assert!(py_max(nan, 1.0).is_nan());
        assert_eq!(py_max(1.0, nan), 1.0);
        assert!(py_min(0.0_f64, -0.0).is_sign_positive());
        assert!(py_min(-0.0_f64, 0.0).is_sign_negative());
        assert!(py_max(-0.0_f64, 0.0).is_sign_negative());
        assert_eq!(py_min(3_i64, 2), 2);
    }

    #[test]
    fn int_of_float() {
        assert_eq!(py_int(2.9), 2);
        assert_eq!(py_int(-2.9), -2);
        assert_eq!(py_int(f64::NAN), i64::MIN);
        assert_eq!(py_int(f64::INFINITY), i64::MIN);
        assert_eq!(py_int(-9.3e18), i64::MIN);
        assert_eq!(py_int(-9_223_372_036_854_775_808.0), i64::MIN);
        assert_eq!(py_int(9.2e18), 9_200_000_000_000_000_000);
    }

    #[test]
    fn division() {
        assert_eq!(
            div(1.0, 0.0),
            Err(KernelError::ZeroDivision("division by zero"))
        );
        assert_eq!(
            div(1.0, -0.0),
            Err(KernelError::ZeroDivision("division by zero"))
        );
        assert!(div(1.0, f64::NAN).unwrap().is_nan());
        assert_eq!(div(1.0, 4.0), Ok(0.25));
    }
}
