//! The window tests' kernels: the numba kernels of `detectors/kernels/windows.py` (until commit
//! 4d4679a) statement by statement. The CDF
//! pass (`cdf_gaps`: both estimated CDFs at the union of two sorted weighted samples, in one
//! merge) and the binned tests' kernels on int64 count vectors (`pool_small`, `pool_counts`,
//! `chi_square_terms`, `psi_parts`, with `_exact_counts`), and `add_to_bins`.

use numpy::ndarray::Array2;
use numpy::{PyArray1, PyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::{div, min_len, py_max, py_min, Arrays, KResult};

/// windows.py's `EXACT`: below it every partial sum of counts (and of counts plus 0.5) is a
/// float without rounding.
const EXACT: f64 = 2_251_799_813_685_248.0; // 2.0**51

/// `(gaps, steps, ks)` as `cdf_gaps` returns them: `None` for its `-1` answer.
type Gaps = Option<(Vec<f64>, Vec<f64>, f64)>;
/// Float64 and int64 numpy arrays returned.
type Floats<'py> = Bound<'py, PyArray1<f64>>;
type Ints<'py> = Bound<'py, PyArray1<i64>>;

/// `cdf_gaps` on slices.
fn cdf_gaps_of(
    ref_values: &[f64],
    ref_weights: &[f64],
    win_values: &[f64],
    win_weights: &[f64],
) -> KResult<Gaps> {
    let n_ref = ref_values.len();
    let n_win = win_values.len();
    if ref_weights.len() != n_ref || win_weights.len() != n_win {
        return Ok(None);
    }
    if ref_values.iter().any(|v| v.is_nan()) || win_values.iter().any(|v| v.is_nan()) {
        return Ok(None);
    }
    let mut ref_total = 0.0;
    for &w in ref_weights {
        ref_total += w;
    }
    let mut win_total = 0.0;
    for &w in win_weights {
        win_total += w;
    }
    let mut gaps = vec![0.0_f64; n_ref + n_win];
    let mut steps = vec![0.0_f64; (n_ref + n_win).saturating_sub(1)];
    let mut ref_cumulative = 0.0;
    let mut win_cumulative = 0.0;
    let mut ks = 0.0;
    let (mut i, mut j, mut k) = (0_usize, 0_usize, 0_usize);
    let mut previous = 0.0;
    while i < n_ref || j < n_win {
        let point = if j >= n_win || (i < n_ref && ref_values[i] <= win_values[j]) {
            ref_values[i]
        } else {
            win_values[j]
        };
        let consumed = i + j;
        while i < n_ref && ref_values[i] <= point {
            ref_cumulative += ref_weights[i];
            i += 1;
        }
        while j < n_win && win_values[j] <= point {
            win_cumulative += win_weights[j];
            j += 1;
        }
        if i + j == consumed {
            // unsorted input: never loop forever
            return Ok(None);
        }
        let gap = (div(ref_cumulative, ref_total)? - div(win_cumulative, win_total)?).abs();
        gaps[k] = gap;
        if k != 0 {
            steps[k - 1] = point - previous;
        }
        if gap > ks {
            ks = gap;
        }
        previous = point;
        k += 1;
    }
    gaps.truncate(k);
    steps.truncate(k.saturating_sub(1));
    Ok(Some((gaps, steps, ks)))
}

/// Called by `streamdrift.detectors.kernels.windows.cdf_gaps(ref_values, ref_weights,
/// win_values, win_weights)`: `(gaps, steps, ks)` of two samples sorted ascending (float64),
/// each with positive total weight: `gaps[i] = |F_ref(p_i) - F_win(p_i)|` at the distinct
/// values `p_0 < p_1 < ...` of both, `steps[i] = p_{i+1} - p_i` and `ks` the largest gap;
/// `(empty, empty, -1.0)` for NaN among the values, weights and values of different lengths or
/// unsorted values. New float64 arrays (numba returns views of longer ones: the same values).
/// `ZeroDivisionError` if a sample's weights sum to zero, as in numba.
#[pyfunction]
pub(crate) fn cdf_gaps<'py>(
    py: Python<'py>,
    ref_values: &Bound<'py, PyArray1<f64>>,
    ref_weights: &Bound<'py, PyArray1<f64>>,
    win_values: &Bound<'py, PyArray1<f64>>,
    win_weights: &Bound<'py, PyArray1<f64>>,
) -> PyResult<(Floats<'py>, Floats<'py>, f64)> {
    let mut arrays = Arrays::new();
    let found = cdf_gaps_of(
        arrays.input("ref_values", ref_values)?,
        arrays.input("ref_weights", ref_weights)?,
        arrays.input("win_values", win_values)?,
        arrays.input("win_weights", win_weights)?,
    )?;
    Ok(match found {
        Some((gaps, steps, ks)) => (
            PyArray1::from_vec(py, gaps),
            PyArray1::from_vec(py, steps),
            ks,
        ),
        None => (
            PyArray1::from_vec(py, Vec::new()),
            PyArray1::from_vec(py, Vec::new()),
            -1.0,
        ),
    })
}

/// `_exact_counts`: the same length, no negative count, and the sum of both (as floats, in
/// order) below `EXACT`.
fn exact_counts(reference: &[i64], window: &[i64]) -> bool {
    if reference.len() != window.len() {
        return false;
    }
    let mut total = 0.0;
    for (&r, &w) in reference.iter().zip(window) {
        if r < 0 || w < 0 {
            return false;
        }
        total += r as f64 + w as f64;
    }
    total < EXACT
}

/// `pool_small` on slices: `small` is zeroed, `reference.len()` long.
fn pool_small_of(reference: &[i64], window: &[i64], min_expected: f64, small: &mut [bool]) -> bool {
    if !exact_counts(reference, window) {
        return false;
    }
    let mut ref_total: i64 = 0;
    let mut win_total: i64 = 0;
    for (&r, &w) in reference.iter().zip(window) {
        ref_total = ref_total.wrapping_add(r);
        win_total = win_total.wrapping_add(w);
    }
    if ref_total.wrapping_add(win_total) >= 1 << 31 {
        return false;
    }
    let smaller = py_min(ref_total, win_total);
    let total = py_max(ref_total.wrapping_add(win_total), 1) as f64;
    for ((flag, &r), &w) in small.iter_mut().zip(reference).zip(window) {
        // total >= 1: numba's check of the divisor never fires.
        *flag = r.wrapping_add(w).wrapping_mul(smaller) as f64 / total < min_expected;
    }
    true
}

/// Called by `streamdrift.detectors.kernels.windows.pool_small(reference, window,
/// min_expected)`: `(ok, small)`, the mask of bins whose expected count is below
/// `min_expected` (`detectors.distances.pool_small`); `ok` False (and `small` all False) for
/// counts the kernel does not take (other lengths, negative, sums not exact). `small` is a new
/// bool array of `len(reference)`.
#[pyfunction]
pub(crate) fn pool_small<'py>(
    py: Python<'py>,
    reference: &Bound<'py, PyArray1<i64>>,
    window: &Bound<'py, PyArray1<i64>>,
    min_expected: f64,
) -> PyResult<(bool, Bound<'py, PyArray1<bool>>)> {
    let mut arrays = Arrays::new();
    let reference = arrays.input("reference", reference)?;
    let window = arrays.input("window", window)?;
    let mut small = vec![false; reference.len()];
    let ok = pool_small_of(reference, window, min_expected, &mut small);
    Ok((ok, PyArray1::from_vec(py, small)))
}

/// Called by `streamdrift.detectors.kernels.windows.pool_counts(reference, window, small)`: both
/// int64 count vectors with the `small` bins summed into one last bin (int64 sums wrap, as
/// numba's and numpy's do); two new int64 arrays of the bins kept plus one. `reference` and
/// `window` need at least `len(small)` elements (numba reads that many).
#[pyfunction]
pub(crate) fn pool_counts<'py>(
    py: Python<'py>,
    reference: &Bound<'py, PyArray1<i64>>,
    window: &Bound<'py, PyArray1<i64>>,
    small: &Bound<'py, PyArray1<bool>>,
) -> PyResult<(Ints<'py>, Ints<'py>)> {
    let mut arrays = Arrays::new();
    let reference = arrays.input("reference", reference)?;
    let window = arrays.input("window", window)?;
    let small = arrays.input("small", small)?;
    min_len("reference", reference, small.len(), "len(small)")?;
    min_len("window", window, small.len(), "len(small)")?;
    let kept = small.iter().filter(|&&s| !s).count();
    let mut ref_pooled = vec![0_i64; kept + 1];
    let mut win_pooled = vec![0_i64; kept + 1];
    let mut ref_other: i64 = 0;
    let mut win_other: i64 = 0;
    let mut k = 0;
    for ((&is_small, &r), &w) in small.iter().zip(reference).zip(window) {
        if is_small {
            ref_other = ref_other.wrapping_add(r);
            win_other = win_other.wrapping_add(w);
        } else {
            ref_pooled[k] = r;
            win_pooled[k] = w;
            k += 1;
        }
    }
    ref_pooled[kept] = ref_other;
    win_pooled[kept] = win_other;
    Ok((
        PyArray1::from_vec(py, ref_pooled),
        PyArray1::from_vec(py, win_pooled),
    ))
}

/// `chi_square_terms` on slices: `(ok, terms in row-major order, kept, dof)`.
fn chi_square_terms_of(reference: &[i64], window: &[i64]) -> KResult<(bool, Vec<f64>, usize, i64)> {
    if !exact_counts(reference, window) {
        return Ok((false, Vec::new(), 0, 0));
    }
    let mut kept: usize = 0;
    let mut ref_total = 0.0;
    let mut win_total = 0.0;
    for (&r, &w) in reference.iter().zip(window) {
        if r as f64 + w as f64 > 0.0 {
            kept += 1;
            ref_total += r as f64;
            win_total += w as f64;
        }
    }
    if kept < 2 || py_min(ref_total, win_total) == 0.0 {
        return Ok((true, Vec::new(), 0, 0));
    }
    let total = ref_total + win_total;
    let mut terms = vec![0.0_f64; 2 * kept];
    let mut k = 0;
    for (&r, &w) in reference.iter().zip(window) {
        let observed_ref = r as f64;
        let observed_win = w as f64;
        let column = observed_ref + observed_win;
        if column > 0.0 {
            let expected = div(ref_total * column, total)?;
            terms[k] = div(
                (observed_ref - expected) * (observed_ref - expected),
                expected,
            )?;
            let expected = div(win_total * column, total)?;
            terms[kept + k] = div(
                (observed_win - expected) * (observed_win - expected),
                expected,
            )?;
            k += 1;
        }
    }
    Ok((true, terms, kept, kept as i64 - 1))
}

/// Called by `streamdrift.detectors.kernels.windows.chi_square_terms(reference, window)`:
/// `(ok, terms, dof)`, the 2 x bins float64 table of `(observed - expected) ** 2 / expected`
/// over the bins not empty on both sides (shape (2, 0) when fewer than two), for numpy to sum;
/// `ok` False for counts the kernel does not take.
#[pyfunction]
pub(crate) fn chi_square_terms<'py>(
    py: Python<'py>,
    reference: &Bound<'py, PyArray1<i64>>,
    window: &Bound<'py, PyArray1<i64>>,
) -> PyResult<(bool, Bound<'py, PyArray2<f64>>, i64)> {
    let mut arrays = Arrays::new();
    let (ok, terms, kept, dof) = chi_square_terms_of(
        arrays.input("reference", reference)?,
        arrays.input("window", window)?,
    )?;
    let table = Array2::from_shape_vec((2, kept), terms)
        .map_err(|error| PyValueError::new_err(error.to_string()))?;
    Ok((ok, PyArray2::from_owned_array(py, table), dof))
}

/// `psi_parts` on slices: `differences` and `ratios` are `reference.len()` long.
fn psi_parts_of(
    reference: &[i64],
    window: &[i64],
    smoothing: f64,
    differences: &mut [f64],
    ratios: &mut [f64],
) -> KResult<bool> {
    if !exact_counts(reference, window) {
        return Ok(false);
    }
    let mut ref_total = 0.0;
    let mut win_total = 0.0;
    for (&r, &w) in reference.iter().zip(window) {
        ref_total += r as f64 + smoothing;
        win_total += w as f64 + smoothing;
    }
    for (j, (&r, &w)) in reference.iter().zip(window).enumerate() {
        let reference_share = div(r as f64 + smoothing, ref_total)?;
        let window_share = div(w as f64 + smoothing, win_total)?;
        differences[j] = window_share - reference_share;
        ratios[j] = div(window_share, reference_share)?;
    }
    Ok(true)
}

/// Called by `streamdrift.detectors.kernels.windows.psi_parts(reference, window, smoothing)`:
/// `(ok, differences, ratios)` of the smoothed shares, `w - r` and `w / r` (new float64
/// arrays of `len(reference)`). With `ok` False numba's arrays are uninitialised memory
/// (`np.empty`); these are zeros. `ZeroDivisionError` where a share or total is zero (smoothing
/// 0), as in numba.
#[pyfunction]
pub(crate) fn psi_parts<'py>(
    py: Python<'py>,
    reference: &Bound<'py, PyArray1<i64>>,
    window: &Bound<'py, PyArray1<i64>>,
    smoothing: f64,
) -> PyResult<(bool, Floats<'py>, Floats<'py>)> {
    let mut arrays = Arrays::new();
    let reference = arrays.input("reference", reference)?;
    let window = arrays.input("window", window)?;
    let mut differences = vec![0.0_f64; reference.len()];
    let mut ratios = vec![0.0_f64; reference.len()];
    let ok = psi_parts_of(reference, window, smoothing, &mut differences, &mut ratios)?;
    Ok((
        ok,
        PyArray1::from_vec(py, differences),
        PyArray1::from_vec(py, ratios),
    ))
}

/// `add_to_bins` on slices: `bins` at least `cuts.len() + 1` long.
pub(crate) fn add_to_bins_of(bins: &mut [i64], cuts: &[f64], values: &[f64]) {
    let n_cuts = cuts.len();
    for &value in values {
        if value.is_nan() {
            bins[n_cuts] = bins[n_cuts].wrapping_add(1);
            continue;
        }
        let mut low = 0;
        let mut high = n_cuts;
        while low < high {
            // the first cut >= value
            let middle = (low + high) / 2;
            if cuts[middle] < value {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        bins[low] = bins[low].wrapping_add(1);
    }
}

/// Called by `streamdrift.detectors.kernels.windows.add_to_bins(bins, cuts, values)`:
/// `bins += bincount(searchsorted(cuts, values), minlength=len(bins))` in place (int64 `bins`
/// of at least `len(cuts) + 1`, float64 `cuts` and `values`): bin i counts the values above
/// `cuts[i - 1]` and at most `cuts[i]`, NaN in bin `len(cuts)`.
#[pyfunction]
pub(crate) fn add_to_bins<'py>(
    bins: &Bound<'py, PyArray1<i64>>,
    cuts: &Bound<'py, PyArray1<f64>>,
    values: &Bound<'py, PyArray1<f64>>,
) -> PyResult<()> {
    let mut arrays = Arrays::new();
    let bins = arrays.output("bins", bins)?;
    let cuts = arrays.input("cuts", cuts)?;
    let values = arrays.input("values", values)?;
    min_len("bins", bins, cuts.len() + 1, "len(cuts) + 1")?;
    add_to_bins_of(bins, cuts, values);
    Ok(())
}
