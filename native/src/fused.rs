//! One numeric series' batch in few calls: the steps `detectors/monitor.py` and
//! `detectors/windows.py` ran as a dozen numpy calls and three kernel calls per series and
//! batch, fused, each step the same floating-point operations in the same order as before.
//!
//! - `split_moments`: the batch's present (not NaN) values and their indices, and their
//!   moments (`moments.rs`), as `values[~np.isnan(values)]`, `np.flatnonzero(...)` and
//!   `moments` gave them.
//! - `fill_period`: a window's stretch of events into its moments and bins, as
//!   `NumericPeriod.add` did with `values[~missing]`, `moments` and `add_to_bins`.
//! - `numeric_detect`: the values standardised by the reference and clipped (numpy's
//!   `(values - mean) / scale` and `np.clip`), then ADWIN (`adwin.rs`) and the CUSUM bank
//!   (`cusum.rs`) over the clipped values, as `NumericMonitor` ran them one after the other.
//!
//! Arguments are checked as the separate kernels check them, before anything is written.

use numpy::{PyArray1, PyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::adwin::{update_batch, Window};
use crate::cusum::{scan, Bank};
use crate::moments::moments_of;
use crate::windows::add_to_bins_of;
use crate::{exact_len, fixed, fixed_mut, Arrays};

/// numpy's `clip` of one float64 (`_NPY_CLIP`: `min(max(x, low), high)`, each keeping a NaN
/// `x`, else taking the bound unless `x` is strictly beyond it).
#[inline(always)]
fn clip(x: f64, low: f64, high: f64) -> f64 {
    let raised = if x.is_nan() || x > low { x } else { low };
    if raised.is_nan() || raised < high {
        raised
    } else {
        high
    }
}

/// The values of `values` not flagged in `missing` (NaN ones when `missing` is `None`), in
/// order, with their indices.
fn present_of(values: &[f64], missing: Option<&[bool]>) -> (Vec<f64>, Vec<i64>) {
    let mut present = Vec::with_capacity(values.len());
    let mut index = Vec::with_capacity(values.len());
    for (i, &value) in values.iter().enumerate() {
        let absent = match missing {
            Some(flags) => flags[i],
            None => value.is_nan(),
        };
        if !absent {
            present.push(value);
            index.push(i as i64);
        }
    }
    (present, index)
}

/// `out` = [min, max, mean, m2] of `present` (`moments.rs`); false when there are none, or
/// (with only min and max set) when one lies beyond `+-large`.
fn moments_into(present: &[f64], large: f64, out: &mut [f64]) -> bool {
    !present.is_empty() && moments_of(present, large, out)
}

/// Called by `streamdrift.detectors.kernels.fused.split_moments(values, large, out)`: the
/// values of `values` (float64) that are not NaN and their indices (int64), as new arrays;
/// `out` (float64[4], written in place) = [min, max, mean, m2] of them; returns also whether
/// the moments were computed (False for no values, or with only min and max set if a value
/// lies beyond `+-large`).
#[pyfunction]
#[allow(clippy::type_complexity)]
pub(crate) fn split_moments<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyArray1<f64>>,
    large: f64,
    out: &Bound<'py, PyArray1<f64>>,
) -> PyResult<(Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<i64>>, bool)> {
    let mut arrays = Arrays::new();
    let values = arrays.input("values", values)?;
    let out = arrays.output("out", out)?;
    exact_len("out", out, 4)?;
    let (present, index) = present_of(values, None);
    let computed = moments_into(&present, large, out);
    Ok((
        PyArray1::from_vec(py, present),
        PyArray1::from_vec(py, index),
        computed,
    ))
}

/// Called by `streamdrift.detectors.kernels.fused.fill_period(values, missing, cuts, bins,
/// large, out)`: the values of `values` (float64) not flagged in `missing` (bool, as long) as
/// a new array, counted into `bins` (int64, `len(cuts) + 1`, written in place) as
/// `add_to_bins` counts them at `cuts` (float64); `out` (float64[4], written in place) =
/// [min, max, mean, m2] of them; returns also whether the moments were computed (see
/// `split_moments`).
#[pyfunction]
pub(crate) fn fill_period<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyArray1<f64>>,
    missing: &Bound<'py, PyArray1<bool>>,
    cuts: &Bound<'py, PyArray1<f64>>,
    bins: &Bound<'py, PyArray1<i64>>,
    large: f64,
    out: &Bound<'py, PyArray1<f64>>,
) -> PyResult<(Bound<'py, PyArray1<f64>>, bool)> {
    let mut arrays = Arrays::new();
    let values = arrays.input("values", values)?;
    let missing = arrays.input("missing", missing)?;
    let cuts = arrays.input("cuts", cuts)?;
    let bins = arrays.output("bins", bins)?;
    let out = arrays.output("out", out)?;
    exact_len("missing", missing, values.len())?;
    exact_len("bins", bins, cuts.len() + 1)?;
    exact_len("out", out, 4)?;
    let (present, _) = present_of(values, Some(missing));
    let computed = moments_into(&present, large, out);
    add_to_bins_of(bins, cuts, &present);
    Ok((PyArray1::from_vec(py, present), computed))
}

/// What `numeric_detect` found: the standardised values, ADWIN's hits (index, statistic),
/// the bank's hits (index, statistic, row) and the bank's state after the batch (values
/// since its last restart, their mean).
type Detected<'py> = (
    Bound<'py, PyArray1<f64>>,
    Vec<(i64, f64)>,
    Vec<(i64, f64, i64)>,
    f64,
    f64,
);

/// Called by `streamdrift.detectors.kernels.fused.detect`: standardise `values` (float64, the
/// present values of a batch) as `(values - mean) / scale`, clipped to `+-large` if
/// `bounded` is False, then clip them to `+-clip_sigma` and run ADWIN over them (the arrays
/// of `adwin_update_batch`) and then the CUSUM bank (those of `cusum_scan`, its state as
/// `n` and `bank_mean`). Returns the standardised values (a new array), ADWIN's detections as
/// (index, statistic), the bank's as (index, statistic, row) and the bank's new `n` and mean.
/// ADWIN's and the bank's arrays are written in place, as their own kernels write them.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub(crate) fn numeric_detect<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyArray1<f64>>,
    mean: f64,
    scale: f64,
    bounded: bool,
    large: f64,
    clip_sigma: f64,
    adwin_params: &Bound<'py, PyArray1<f64>>,
    adwin_sums: &Bound<'py, PyArray1<f64>>,
    adwin_counts: &Bound<'py, PyArray1<i64>>,
    adwin_totals: &Bound<'py, PyArray2<f64>>,
    adwin_variances: &Bound<'py, PyArray2<f64>>,
    adwin_used: &Bound<'py, PyArray1<i64>>,
    rows: &Bound<'py, PyArray1<i64>>,
    signs: &Bound<'py, PyArray1<f64>>,
    allowances: &Bound<'py, PyArray1<f64>>,
    thresholds: &Bound<'py, PyArray1<f64>>,
    min_instances: f64,
    n: f64,
    bank_mean: f64,
    bank_sums: &Bound<'py, PyArray1<f64>>,
) -> PyResult<Detected<'py>> {
    let shape = adwin_totals.shape().to_vec();
    if adwin_variances.shape() != shape.as_slice() {
        return Err(PyValueError::new_err(format!(
            "adwin_totals {:?} and adwin_variances {:?} must have one shape",
            shape,
            adwin_variances.shape()
        )));
    }
    let (levels, columns) = (shape[0], shape[1]);
    let mut arrays = Arrays::new();
    let values = arrays.input("values", values)?;
    let params = arrays.input("adwin_params", adwin_params)?;
    let sums = arrays.output("adwin_sums", adwin_sums)?;
    let counts = arrays.output("adwin_counts", adwin_counts)?;
    let totals = arrays.output("adwin_totals", adwin_totals)?;
    let variances = arrays.output("adwin_variances", adwin_variances)?;
    let used = arrays.output("adwin_used", adwin_used)?;
    let bank = Bank {
        rows: arrays.input("rows", rows)?,
        signs: arrays.input("signs", signs)?,
        allowances: arrays.input("allowances", allowances)?,
        thresholds: arrays.input("thresholds", thresholds)?,
    };
    let bank_sums = arrays.output("bank_sums", bank_sums)?;

    let params: &[f64; 5] = fixed("adwin_params", params)?;
    exact_len("adwin_used", used, levels)?;
    bank.check_lengths()?;
    let row_index = bank.row_index(!values.is_empty(), "bank_sums", bank_sums.len())?;
    let mut window = Window {
        sums: fixed_mut("adwin_sums", sums)?,
        counts: fixed_mut("adwin_counts", counts)?,
        totals,
        variances,
        used,
        rows: levels,
        cols: columns,
    };

    // _standardise, then NumericMonitor._detector_input, value by value.
    let length = values.len();
    let mut standardised = Vec::with_capacity(length);
    let mut inputs = Vec::with_capacity(length);
    for &value in values {
        let mut x = (value - mean) / scale;
        if !bounded {
            x = clip(x, -large, large);
        }
        standardised.push(x);
        inputs.push(clip(x, -clip_sigma, clip_sigma));
    }

    let mut hit_index = vec![0_i64; length];
    let mut hit_statistic = vec![0.0_f64; length];
    let adwin_hits = update_batch(
        &inputs,
        params,
        &mut window,
        &mut hit_index,
        &mut hit_statistic,
    )? as usize;
    let adwin_found: Vec<(i64, f64)> = hit_index[..adwin_hits]
        .iter()
        .copied()
        .zip(hit_statistic[..adwin_hits].iter().copied())
        .collect();

    let mut state = [n, bank_mean];
    let mut hit_row = vec![0_i64; length];
    let bank_hits = scan(
        &inputs,
        &bank,
        min_instances,
        &mut state,
        bank_sums,
        &mut hit_index,
        &mut hit_statistic,
        &mut hit_row,
        &row_index,
    )? as usize;
    let bank_found: Vec<(i64, f64, i64)> = (0..bank_hits)
        .map(|k| (hit_index[k], hit_statistic[k], hit_row[k]))
        .collect();
    Ok((
        PyArray1::from_vec(py, standardised),
        adwin_found,
        bank_found,
        state[0],
        state[1],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_is_numpys() {
        assert_eq!(clip(5.0, -4.0, 4.0), 4.0);
        assert_eq!(clip(-5.0, -4.0, 4.0), -4.0);
        assert_eq!(clip(1.5, -4.0, 4.0), 1.5);
        assert!(clip(-0.0, -4.0, 4.0).is_sign_negative());
        assert!(clip(f64::NAN, -4.0, 4.0).is_nan());
        assert_eq!(clip(f64::INFINITY, -1e100, 1e100), 1e100);
        assert_eq!(clip(f64::NEG_INFINITY, -1e100, 1e100), -1e100);
        assert_eq!(clip(3.0, f64::NEG_INFINITY, f64::INFINITY), 3.0);
    }

    #[test]
    fn present_values_and_indices() {
        let values = [1.0, f64::NAN, -0.0, f64::NAN, 2.5];
        let (present, index) = present_of(&values, None);
        assert_eq!(present.len(), 3);
        assert!(present[1].is_sign_negative());
        assert_eq!(index, vec![0, 2, 4]);
        let flags = [false, false, true, false, true];
        let (present, index) = present_of(&values, Some(&flags));
        assert_eq!(present.len(), 3);
        assert!(present[1].is_nan());
        assert_eq!(index, vec![0, 1, 3]);
    }
}
