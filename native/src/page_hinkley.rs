//! Page-Hinkley over a batch: `detectors/kernels/page_hinkley.py`'s `_update_batch` (river's
//! `PageHinkley.update`, line for line) with `_statistic`, the same floating-point operations in
//! the same order.
//!
//! State (float64[7]): the running mean's weight `n` and `mean`, `sum_increase`,
//! `sum_decrease`, `min_increase` (+inf at the start), `max_decrease` (-1 at the start) and the
//! drift flag of the last value.

use numpy::PyArray1;
use pyo3::prelude::*;

use crate::{div, fixed, fixed_mut, min_len, py_max, Arrays, KResult};

/// `_statistic`: the rise over the minimum (mode 0, up), the fall under the maximum (1, down),
/// or the larger of the two (Python's `max`: `up` unless `down > up`).
#[inline(always)]
fn statistic(state: &[f64; 7], mode: i64) -> f64 {
    let up = state[2] - state[4];
    let down = state[5] - state[3];
    if mode == 0 {
        return up;
    }
    if mode == 1 {
        return down;
    }
    py_max(up, down)
}

/// `_update_batch` on slices: the hit arrays at least `values.len()` long.
fn update_batch(
    values: &[f64],
    params: &[f64; 4],
    mode: i64,
    state: &mut [f64; 7],
    hit_index: &mut [i64],
    hit_statistic: &mut [f64],
) -> KResult<i64> {
    let min_instances = params[0];
    let delta = params[1];
    let threshold = params[2];
    let alpha = params[3];
    let mut hits: usize = 0;
    for (i, &x) in values.iter().enumerate() {
        if state[6] != 0.0 {
            // river's _reset
            state[0] = 0.0;
            state[1] = 0.0;
            state[2] = 0.0;
            state[3] = 0.0;
            state[4] = f64::INFINITY;
            state[5] = -1.0;
        }
        state[0] += 1.0;
        state[1] += div(1.0, state[0])? * (x - state[1]);
        let deviation = x - state[1];
        state[2] = alpha * state[2] + deviation - delta;
        state[3] = alpha * state[3] + deviation + delta;
        if state[2] < state[4] {
            state[4] = state[2];
        }
        if state[3] > state[5] {
            state[5] = state[3];
        }
        let mut detected = false;
        if state[0] >= min_instances {
            let increase = state[2] - state[4];
            let decrease = state[5] - state[3];
            detected = if mode == 0 {
                increase > threshold
            } else if mode == 1 {
                decrease > threshold
            } else {
                increase > threshold || decrease > threshold
            };
        }
        if detected {
            hit_index[hits] = i as i64;
            hit_statistic[hits] = statistic(state, mode);
            hits += 1;
            state[6] = 1.0;
        } else {
            state[6] = 0.0;
        }
    }
    Ok(hits as i64)
}

/// Called by `streamdrift.detectors.kernels.page_hinkley._update_batch` (with `_statistic`):
/// feed `values` in order, writing `state` (float64[7]) in place; the index and statistic of
/// each detection go to the `hit_` arrays (at least `len(values)` long); returns how many.
/// `params` = [min_instances, delta, threshold, alpha] (float64[4]); `mode` 0 up, 1 down,
/// anything else both.
#[pyfunction]
pub(crate) fn page_hinkley_update_batch<'py>(
    values: &Bound<'py, PyArray1<f64>>,
    params: &Bound<'py, PyArray1<f64>>,
    mode: i64,
    state: &Bound<'py, PyArray1<f64>>,
    hit_index: &Bound<'py, PyArray1<i64>>,
    hit_statistic: &Bound<'py, PyArray1<f64>>,
) -> PyResult<i64> {
    let mut arrays = Arrays::new();
    let values = arrays.input("values", values)?;
    let params = arrays.input("params", params)?;
    let state = arrays.output("state", state)?;
    let hit_index = arrays.output("hit_index", hit_index)?;
    let hit_statistic = arrays.output("hit_statistic", hit_statistic)?;
    let params: &[f64; 4] = fixed("params", params)?;
    let state: &mut [f64; 7] = fixed_mut("state", state)?;
    min_len("hit_index", hit_index, values.len(), "len(values)")?;
    min_len("hit_statistic", hit_statistic, values.len(), "len(values)")?;
    Ok(update_batch(
        values,
        params,
        mode,
        state,
        hit_index,
        hit_statistic,
    )?)
}
