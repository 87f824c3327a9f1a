//! ADWIN over a batch: river's `AdaptiveWindowing` (its Rust core 0.26) line for line, as the
//! numba kernel of `detectors/kernels/adwin.py` (until commit 4d4679a) had it, statement by
//! statement.
//!
//! Layout of the arrays (as in adwin.py)
//!   `params`  float64[5]: delta, clock, max_buckets, min_window_length, grace_period
//!   `sums`    float64[4]: total, variance, width, total_width
//!   `counts`  int64[6]: n_buckets, max_n_buckets, tick, n_detections, levels, drift flag
//!   `totals`, `variances`  float64[levels, max_buckets + 1], C order
//!   `used`    int64[levels]: buckets in use per level
//!
//! adwin.py's `LEVELS` (64, the rows `AdwinWindow` allocates) is read here from the arrays'
//! shape; a window that would need a row beyond them raises `ValueError` (numba would write
//! out of bounds).

use numpy::{PyArray1, PyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::{div, exact_len, fixed, fixed_mut, min_len, py_int, Arrays, KResult, KernelError};

/// adwin.py's `_I32`: river's tick is an i32, which wraps in its release build.
const I32: i64 = 1 << 31;

const TOTAL: usize = 0;
const VARIANCE: usize = 1;
const WIDTH: usize = 2;
const TOTAL_WIDTH: usize = 3;
const N_BUCKETS: usize = 0;
const MAX_N_BUCKETS: usize = 1;
const TICK: usize = 2;
const DETECTIONS: usize = 3;
const N_LEVELS: usize = 4;
const DRIFT: usize = 5;

/// The window's state: the arrays `_update_batch` passes to its helpers.
pub(crate) struct Window<'a> {
    pub(crate) sums: &'a mut [f64; 4],
    pub(crate) counts: &'a mut [i64; 6],
    pub(crate) totals: &'a mut [f64],
    pub(crate) variances: &'a mut [f64],
    pub(crate) used: &'a mut [i64],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

/// `float(np.int64(1) << level)`; `level` is below the arrays' rows (checked by the caller).
/// A shift of 64 or more is undefined in LLVM; x86's shift (and `wrapping_shl`) masks it.
#[inline(always)]
fn bucket_size(level: i64) -> f64 {
    1_i64.wrapping_shl(level as u32) as f64
}

impl Window<'_> {
    /// The flat index of `[level, i]`, or the error numba's unchecked indexing would not give.
    #[inline(always)]
    fn at(&self, level: i64, i: i64) -> KResult<usize> {
        if level < 0 || level as u64 >= self.rows as u64 || i < 0 || i as u64 >= self.cols as u64 {
            return Err(KernelError::OutOfBounds(format!(
                "ADWIN state out of bounds: bucket [{level}, {i}] of a {}x{} window (a corrupt \
                 state: used or counts[4] beyond the arrays)",
                self.rows, self.cols
            )));
        }
        Ok(level as usize * self.cols + i as usize)
    }

    /// The index of `used[level]`.
    #[inline(always)]
    fn level(&self, level: i64) -> KResult<usize> {
        if level < 0 || level as u64 >= self.rows as u64 {
            return Err(KernelError::OutOfBounds(format!(
                "ADWIN state out of bounds: level {level} of {} (a corrupt state: counts[4] \
                 beyond the arrays)",
                self.rows
            )));
        }
        Ok(level as usize)
    }

    /// `_shift_out`: drop the `k` oldest buckets of `level` (river's `compress_buckets_row`).
    fn shift_out(&mut self, level: i64, k: i64) -> KResult<()> {
        let l = self.level(level)?;
        let c = self.used[l];
        let mut i = 0;
        while i < c.wrapping_sub(k) {
            let to = self.at(level, i)?;
            let from = self.at(level, i.wrapping_add(k))?;
            self.totals[to] = self.totals[from];
            self.variances[to] = self.variances[from];
            i += 1;
        }
        let mut i = crate::py_max(c.wrapping_sub(k), 0);
        while i < c {
            let to = self.at(level, i)?;
            self.totals[to] = 0.0;
            self.variances[to] = 0.0;
            i += 1;
        }
        self.used[l] = c.wrapping_sub(k);
        Ok(())
    }

    /// `_reset`: an empty window (river's `ADWIN._reset`, a new Rust window).
    fn reset(&mut self) -> KResult<()> {
        let mut level = 0;
        while level < self.counts[N_LEVELS] {
            let l = self.level(level)?;
            self.used[l] = 0;
            let row = l * self.cols;
            self.totals[row..row + self.cols].fill(0.0);
            self.variances[row..row + self.cols].fill(0.0);
            level += 1;
        }
        self.sums.fill(0.0);
        self.counts.fill(0);
        self.counts[N_LEVELS] = 1;
        Ok(())
    }

    /// `_insert`: river's `insert_element` then `compress_buckets`.
    fn insert(&mut self, value: f64, max_buckets: i64) -> KResult<()> {
        let l0 = self.level(0)?;
        let first = self.at(0, self.used[l0])?;
        self.totals[first] = value;
        self.variances[first] = 0.0;
        self.used[l0] = self.used[l0].wrapping_add(1);
        self.counts[N_BUCKETS] = self.counts[N_BUCKETS].wrapping_add(1);
        if self.counts[N_BUCKETS] > self.counts[MAX_N_BUCKETS] {
            self.counts[MAX_N_BUCKETS] = self.counts[N_BUCKETS];
        }
        self.sums[WIDTH] += 1.0;
        let mut increment = 0.0;
        if self.sums[WIDTH] > 1.0 {
            let deviation = value - div(self.sums[TOTAL], self.sums[WIDTH] - 1.0)?;
            increment = div(
                (self.sums[WIDTH] - 1.0) * deviation * deviation,
                self.sums[WIDTH],
            )?;
        }
        self.sums[VARIANCE] += increment;
        self.sums[TOTAL] += value;
        let mut level: i64 = 0;
        while self.used[self.level(level)?] == max_buckets.wrapping_add(1) {
            let size = bucket_size(level);
            let total0 = self.totals[self.at(level, 0)?];
            let total1 = self.totals[self.at(level, 1)?];
            let mean0 = div(total0, size)?;
            let mean1 = div(total1, size)?;
            let spread = size * 0.5 * (mean0 - mean1) * (mean0 - mean1);
            let merged_variance =
                self.variances[self.at(level, 0)?] + self.variances[self.at(level, 1)?] + spread;
            if level + 1 >= self.counts[N_LEVELS] {
                self.counts[N_LEVELS] = self.counts[N_LEVELS].wrapping_add(1);
            }
            let next = self.level(level + 1)?;
            let to = self.at(level + 1, self.used[next])?;
            self.totals[to] = total0 + total1;
            self.variances[to] = merged_variance;
            self.used[next] = self.used[next].wrapping_add(1);
            self.counts[N_BUCKETS] = self.counts[N_BUCKETS].wrapping_add(1);
            self.shift_out(level, 2)?;
            if self.used[next] <= max_buckets {
                break;
            }
            level += 1;
        }
        Ok(())
    }

    /// `_drop_oldest`: river's `delete_element`, the oldest bucket leaves the window.
    fn drop_oldest(&mut self) -> KResult<()> {
        let last = self.counts[N_LEVELS].wrapping_sub(1);
        let oldest = self.at(last, 0)?;
        let size = bucket_size(last);
        let total = self.totals[oldest];
        let mean = div(total, size)?;
        self.sums[WIDTH] -= size;
        self.sums[TOTAL] -= total;
        let window_mean = div(self.sums[TOTAL], self.sums[WIDTH])?;
        self.sums[VARIANCE] -= self.variances[oldest]
            + div(
                size * self.sums[WIDTH] * (mean - window_mean) * (mean - window_mean),
                size + self.sums[WIDTH],
            )?;
        self.shift_out(last, 1)?;
        self.counts[N_BUCKETS] = self.counts[N_BUCKETS].wrapping_sub(1);
        if self.used[self.level(last)?] == 0 {
            self.counts[N_LEVELS] = self.counts[N_LEVELS].wrapping_sub(1);
        }
        Ok(())
    }

    /// `_cut`: one pass of river's `detect_change` over the cut points, from the oldest buckets
    /// (the highest level) to the newest; drops the oldest bucket and returns true at the first
    /// cut whose two sides' means differ by more than the bound.
    fn cut(&mut self, min_window_length: f64, delta: f64) -> KResult<bool> {
        let mut n0 = 0.0;
        let mut n1 = self.sums[WIDTH];
        let mut u0 = 0.0;
        let mut u1 = self.sums[TOTAL];
        let width = self.sums[WIDTH];
        if width < 2.0 * min_window_length {
            return Ok(false);
        }
        let delta_prime = div(2.0 * width.ln(), delta)?.ln();
        let variance = div(self.sums[VARIANCE], width)?;
        let mut level = self.counts[N_LEVELS].wrapping_sub(1);
        while level > -1 {
            let size = bucket_size(level);
            let in_use = self.used[self.level(level)?];
            let mut k = 0;
            while k < in_use {
                n0 += size;
                n1 -= size;
                let total = self.totals[self.at(level, k)?];
                u0 += total;
                u1 -= total;
                if level == 0 && k == in_use - 1 {
                    return Ok(false);
                }
                let delta_mean = div(u0, n0)? - div(u1, n1)?;
                if n1 >= min_window_length && n0 >= min_window_length {
                    let mut m_recip = div(1.0, n0 - min_window_length + 1.0)?;
                    m_recip += div(1.0, n1 - min_window_length + 1.0)?;
                    let epsilon = (2.0 * m_recip * variance * delta_prime).sqrt()
                        + 2.0 / 3.0 * delta_prime * m_recip;
                    if delta_mean.abs() > epsilon {
                        if self.sums[WIDTH] > 0.0 {
                            self.drop_oldest()?;
                        }
                        return Ok(true);
                    }
                }
                k += 1;
            }
            level -= 1;
        }
        Ok(false)
    }
}

/// `_update_batch` on slices: `hit_index` and `hit_statistic` hold at least `values.len()`.
pub(crate) fn update_batch(
    values: &[f64],
    params: &[f64; 5],
    window: &mut Window<'_>,
    hit_index: &mut [i64],
    hit_statistic: &mut [f64],
) -> KResult<i64> {
    let delta = params[0];
    let clock = py_int(params[1]);
    let max_buckets = py_int(params[2]);
    let min_window_length = params[3];
    let grace_period = params[4];
    let mut hits: usize = 0;
    for (i, &value) in values.iter().enumerate() {
        if window.counts[DRIFT] != 0 {
            window.reset()?;
        }
        let width_before = window.sums[WIDTH];
        let total_before = window.sums[TOTAL];
        window.insert(value, max_buckets)?;
        let mut detected = false;
        window.counts[TICK] = window.counts[TICK].wrapping_add(1);
        if window.counts[TICK] >= I32 {
            window.counts[TICK] = window.counts[TICK].wrapping_sub(2 * I32);
        }
        if clock == 0 {
            return Err(KernelError::ZeroDivision("integer modulo by zero"));
        }
        // Python's floor modulo and Rust's truncating one are zero together; numba gives 0 for
        // i64::MIN % -1, as wrapping_rem does.
        if window.counts[TICK].wrapping_rem(clock) == 0 && window.sums[WIDTH] > grace_period {
            while window.cut(min_window_length, delta)? {
                detected = true;
            }
        }
        window.sums[TOTAL_WIDTH] += window.sums[WIDTH];
        if detected {
            window.counts[DETECTIONS] = window.counts[DETECTIONS].wrapping_add(1);
            let kept = window.sums[WIDTH];
            let kept_total = window.sums[TOTAL];
            let dropped_mean = div(total_before + value - kept_total, width_before + 1.0 - kept)?;
            hit_index[hits] = i as i64;
            hit_statistic[hits] = (div(kept_total, kept)? - dropped_mean).abs();
            hits += 1;
            window.counts[DRIFT] = 1;
        } else {
            window.counts[DRIFT] = 0;
        }
    }
    Ok(hits as i64)
}

/// Called by `streamdrift.detectors.kernels.adwin._update_batch` (the numba kernel before;
/// here with `shift_out`, `reset`, `insert`, `drop_oldest` and `cut`): feed `values` in order
/// (river's `ADWIN.update` per value: reset after a detection, then the Rust window's update),
/// writing `sums`, `counts`,
/// `totals`, `variances` and `used` in place. The index and statistic of each detection go to
/// `hit_index` / `hit_statistic` (at least `len(values)` long); returns how many there were.
///
/// `params` float64[5], `sums` float64[4], `counts` int64[6], `totals` and `variances`
/// float64[levels, columns] of one shape, C-contiguous, `used` int64[levels].
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub(crate) fn adwin_update_batch<'py>(
    values: &Bound<'py, PyArray1<f64>>,
    params: &Bound<'py, PyArray1<f64>>,
    sums: &Bound<'py, PyArray1<f64>>,
    counts: &Bound<'py, PyArray1<i64>>,
    totals: &Bound<'py, PyArray2<f64>>,
    variances: &Bound<'py, PyArray2<f64>>,
    used: &Bound<'py, PyArray1<i64>>,
    hit_index: &Bound<'py, PyArray1<i64>>,
    hit_statistic: &Bound<'py, PyArray1<f64>>,
) -> PyResult<i64> {
    let shape = totals.shape().to_vec();
    if variances.shape() != shape.as_slice() {
        return Err(PyValueError::new_err(format!(
            "totals {:?} and variances {:?} must have one shape",
            shape,
            variances.shape()
        )));
    }
    let (rows, cols) = (shape[0], shape[1]);
    let mut arrays = Arrays::new();
    let values = arrays.input("values", values)?;
    let params = arrays.input("params", params)?;
    let sums = arrays.output("sums", sums)?;
    let counts = arrays.output("counts", counts)?;
    let totals = arrays.output("totals", totals)?;
    let variances = arrays.output("variances", variances)?;
    let used = arrays.output("used", used)?;
    let hit_index = arrays.output("hit_index", hit_index)?;
    let hit_statistic = arrays.output("hit_statistic", hit_statistic)?;

    let params: &[f64; 5] = fixed("params", params)?;
    exact_len("used", used, rows)?;
    min_len("hit_index", hit_index, values.len(), "len(values)")?;
    min_len("hit_statistic", hit_statistic, values.len(), "len(values)")?;
    let mut window = Window {
        sums: fixed_mut("sums", sums)?,
        counts: fixed_mut("counts", counts)?,
        totals,
        variances,
        used,
        rows,
        cols,
    };
    Ok(update_batch(
        values,
        params,
        &mut window,
        hit_index,
        hit_statistic,
    )?)
}
