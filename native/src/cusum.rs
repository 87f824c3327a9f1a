//! The CUSUM bank over a batch: `detectors/kernels/cusum.py`'s `_scan`, statement by
//! statement (cumulative sums and minima added in the same order as the numpy passes of
//! `detectors.cusum.Cusum`).

use numpy::PyArray1;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::{div, exact_len, min_len, py_min, Arrays, KResult};

/// The arrays `_scan` reads.
pub(crate) struct Bank<'a> {
    pub(crate) rows: &'a [i64],
    pub(crate) signs: &'a [f64],
    pub(crate) allowances: &'a [f64],
    pub(crate) thresholds: &'a [f64],
}

/// `rows[j]` as an index into `sums`: numba's indexing wraps a negative index once (as
/// Python's does); `None` beyond that, where numba would read out of bounds.
#[inline(always)]
pub(crate) fn wrap_index(row: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let index = if row < 0 { row.wrapping_add(len) } else { row };
    (0..len).contains(&index).then_some(index as usize)
}

impl Bank<'_> {
    /// `signs`, `allowances` and `thresholds` as long as `rows` (one entry per watched row).
    pub(crate) fn check_lengths(&self) -> PyResult<()> {
        let watched = self.rows.len();
        exact_len("signs", self.signs, watched)?;
        exact_len("allowances", self.allowances, watched)?;
        exact_len("thresholds", self.thresholds, watched)
    }

    /// `rows` as indices into the sums (`sums_name`, `sums_len` long), each checked; none read
    /// when there are no values (numba returns before reading rows then).
    pub(crate) fn row_index(
        &self,
        any_values: bool,
        sums_name: &str,
        sums_len: usize,
    ) -> PyResult<Vec<usize>> {
        if !any_values {
            return Ok(Vec::new());
        }
        self.rows
            .iter()
            .map(|&row| {
                wrap_index(row, sums_len).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "rows holds {row}, outside {sums_name} (length {sums_len})"
                    ))
                })
            })
            .collect()
    }
}

/// `_scan` on slices: `rows` already checked to index `sums` (`row_index`), `signs`,
/// `allowances` and `thresholds` as long as `rows`, the hit arrays at least `values.len()`
/// long.
#[allow(clippy::too_many_arguments)]
pub(crate) fn scan(
    values: &[f64],
    bank: &Bank<'_>,
    min_instances: f64,
    state: &mut [f64],
    sums: &mut [f64],
    hit_index: &mut [i64],
    hit_statistic: &mut [f64],
    hit_row: &mut [i64],
    row_index: &[usize],
) -> KResult<i64> {
    let length = values.len();
    if length == 0 {
        return Ok(0);
    }
    let watched = bank.rows.len();
    // numba's np.empty(watched) three times: on the stack for a bank of up to 16 rows.
    let mut stack = [0.0_f64; 48];
    let mut heap = Vec::new();
    let scratch: &mut [f64] = if watched <= 16 {
        &mut stack[..3 * watched]
    } else {
        heap.resize(3 * watched, 0.0);
        &mut heap
    };
    let (climbed, rest) = scratch.split_at_mut(watched);
    let (lowest, start) = rest.split_at_mut(watched);
    for (s, &r) in start.iter_mut().zip(row_index) {
        *s = -sums[r];
    }
    let mut n0 = state[0];
    let mut mean0 = state[1];
    let mut first: usize = 0; // index of the first value since the last restart
    let mut deviations = 0.0;
    let mut mean = mean0;
    let mut hits: usize = 0;
    for (t, &value) in values.iter().enumerate() {
        let step = (t - first + 1) as i64;
        let n = n0 + step as f64;
        if step == 1 {
            deviations = value - mean0;
        } else {
            deviations += value - mean0;
        }
        mean = mean0 + div(deviations, n)?;
        let deviation = value - mean;
        let eligible = n >= min_instances;
        let mut fired: Option<usize> = None;
        let rows = climbed
            .iter_mut()
            .zip(lowest.iter_mut())
            .zip(start.iter())
            .zip(bank.signs.iter().zip(bank.allowances).zip(bank.thresholds));
        for (j, (((climbed_j, lowest_j), &start_j), ((&sign, &allowance), &threshold))) in
            rows.enumerate()
        {
            let increment = sign * deviation - allowance;
            if step == 1 {
                *climbed_j = increment;
                *lowest_j = increment;
            } else {
                *climbed_j += increment;
                *lowest_j = py_min(*lowest_j, *climbed_j);
            }
            let statistic = *climbed_j - py_min(*lowest_j, start_j);
            if fired.is_none() && eligible && statistic > threshold {
                fired = Some(j);
                hit_statistic[hits] = statistic;
            }
        }
        if let Some(j) = fired {
            hit_index[hits] = t as i64;
            hit_row[hits] = bank.rows[j];
            hits += 1;
            n0 = 0.0;
            mean0 = 0.0;
            start.fill(-0.0);
            first = t + 1;
        }
    }
    sums.fill(0.0);
    if first < length {
        state[0] = n0 + (length - first) as f64;
        state[1] = mean;
        for j in 0..watched {
            sums[row_index[j]] = climbed[j] - py_min(lowest[j], start[j]);
        }
    } else {
        state[0] = 0.0;
        state[1] = 0.0;
    }
    Ok(hits as i64)
}

/// Called by `streamdrift.detectors.kernels.cusum._scan`: run the bank over `values`,
/// restarting after each detection; returns the number of detections, whose value index,
/// statistic and row (into `sums`) go to the `hit_` arrays (at least `len(values)` long).
/// `state` = [values since the restart, their mean] (float64[2]); `sums` = the bank's CUSUMs,
/// both written in place. `rows` (int64) index `sums` (a negative row counts from the end, as
/// in numba); `signs`, `allowances` and `thresholds` hold one float64 per row.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub(crate) fn cusum_scan<'py>(
    values: &Bound<'py, PyArray1<f64>>,
    rows: &Bound<'py, PyArray1<i64>>,
    signs: &Bound<'py, PyArray1<f64>>,
    allowances: &Bound<'py, PyArray1<f64>>,
    thresholds: &Bound<'py, PyArray1<f64>>,
    min_instances: f64,
    state: &Bound<'py, PyArray1<f64>>,
    sums: &Bound<'py, PyArray1<f64>>,
    hit_index: &Bound<'py, PyArray1<i64>>,
    hit_statistic: &Bound<'py, PyArray1<f64>>,
    hit_row: &Bound<'py, PyArray1<i64>>,
) -> PyResult<i64> {
    let mut arrays = Arrays::new();
    let values = arrays.input("values", values)?;
    let bank = Bank {
        rows: arrays.input("rows", rows)?,
        signs: arrays.input("signs", signs)?,
        allowances: arrays.input("allowances", allowances)?,
        thresholds: arrays.input("thresholds", thresholds)?,
    };
    let state = arrays.output("state", state)?;
    let sums = arrays.output("sums", sums)?;
    let hit_index = arrays.output("hit_index", hit_index)?;
    let hit_statistic = arrays.output("hit_statistic", hit_statistic)?;
    let hit_row = arrays.output("hit_row", hit_row)?;

    bank.check_lengths()?;
    exact_len("state", state, 2)?;
    min_len("hit_index", hit_index, values.len(), "len(values)")?;
    min_len("hit_statistic", hit_statistic, values.len(), "len(values)")?;
    min_len("hit_row", hit_row, values.len(), "len(values)")?;
    let row_index = bank.row_index(!values.is_empty(), "sums", sums.len())?;
    Ok(scan(
        values,
        &bank,
        min_instances,
        state,
        sums,
        hit_index,
        hit_statistic,
        hit_row,
        &row_index,
    )?)
}
