//! The moments of a batch: `detectors/kernels/moments.py`'s `_moments`, min, max, mean and the
//! sum of squared deviations, the sums added in numpy's pairwise order (`_pairwise_sum`,
//! `_block_sum`: blocks of up to 128 values in eight interleaved partial sums, halved above
//! that, the first half a multiple of 8 long).

use numpy::PyArray1;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::{exact_len, Arrays};

/// `_term`: `x[i]`, or `(x[i] - mean) ** 2` as `(x[i] - mean) * (x[i] - mean)`.
#[inline(always)]
fn term(x: &[f64], i: usize, mean: f64, squared: bool) -> f64 {
    if squared {
        (x[i] - mean) * (x[i] - mean)
    } else {
        x[i]
    }
}

/// `_block_sum`: numpy's sum of a block of up to 128 values, eight interleaved partial sums.
#[inline(always)]
fn block_sum(x: &[f64], lo: usize, n: usize, mean: f64, squared: bool) -> f64 {
    if n < 8 {
        let mut total = 0.0;
        for i in lo..lo + n {
            total += term(x, i, mean, squared);
        }
        return total;
    }
    let mut r0 = term(x, lo, mean, squared);
    let mut r1 = term(x, lo + 1, mean, squared);
    let mut r2 = term(x, lo + 2, mean, squared);
    let mut r3 = term(x, lo + 3, mean, squared);
    let mut r4 = term(x, lo + 4, mean, squared);
    let mut r5 = term(x, lo + 5, mean, squared);
    let mut r6 = term(x, lo + 6, mean, squared);
    let mut r7 = term(x, lo + 7, mean, squared);
    let mut i = lo + 8;
    let end = lo + n - (n % 8);
    while i < end {
        r0 += term(x, i, mean, squared);
        r1 += term(x, i + 1, mean, squared);
        r2 += term(x, i + 2, mean, squared);
        r3 += term(x, i + 3, mean, squared);
        r4 += term(x, i + 4, mean, squared);
        r5 += term(x, i + 5, mean, squared);
        r6 += term(x, i + 6, mean, squared);
        r7 += term(x, i + 7, mean, squared);
        i += 8;
    }
    let mut total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7));
    while i < lo + n {
        total += term(x, i, mean, squared);
        i += 1;
    }
    total
}

/// `_pairwise_sum` of `x[lo..lo + n]`: blocks of up to 128 values, above that the sum of the
/// two halves (the first `n / 2` rounded down to a multiple of 8). Recursive here (numba's
/// version keeps an explicit stack of halves: the same additions in the same order); the
/// depth is below 60 for any length.
fn pairwise_sum(x: &[f64], lo: usize, n: usize, mean: f64, squared: bool) -> f64 {
    if n <= 128 {
        return block_sum(x, lo, n, mean, squared);
    }
    let mut half = n / 2;
    half -= half % 8;
    pairwise_sum(x, lo, half, mean, squared) + pairwise_sum(x, lo + half, n - half, mean, squared)
}

/// `_moments` on slices (`x` not empty): `out` = [min, max, mean, m2]; false, with only min
/// and max set, if a value lies beyond `+-large`.
pub(crate) fn moments_of(x: &[f64], large: f64, out: &mut [f64]) -> bool {
    let mut low = x[0];
    let mut high = x[0];
    for &value in &x[1..] {
        if value < low {
            low = value;
        }
        if value > high {
            high = value;
        }
    }
    out[0] = low;
    out[1] = high;
    if low < -large || high > large {
        return false;
    }
    // x.len() > 0: numba's check of the divisor never fires.
    let mean = pairwise_sum(x, 0, x.len(), 0.0, false) / x.len() as f64;
    out[2] = mean;
    out[3] = pairwise_sum(x, 0, x.len(), mean, true);
    true
}

/// Called by `streamdrift.detectors.kernels.moments._moments(x, large, out)`: `out`
/// (float64[4], written in place) = [min, max, mean, m2] of `x` (float64, not empty; numba
/// would read past an empty one); returns False, with only min and max set, if a value lies
/// beyond `+-large`.
#[pyfunction]
pub(crate) fn moments<'py>(
    x: &Bound<'py, PyArray1<f64>>,
    large: f64,
    out: &Bound<'py, PyArray1<f64>>,
) -> PyResult<bool> {
    let mut arrays = Arrays::new();
    let x = arrays.input("x", x)?;
    let out = arrays.output("out", out)?;
    exact_len("out", out, 4)?;
    if x.is_empty() {
        return Err(PyValueError::new_err("x must not be empty"));
    }
    Ok(moments_of(x, large, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// numba's explicit stack of halves, transcribed, against the recursion.
    fn stack_sum(x: &[f64], n: usize, mean: f64, squared: bool) -> f64 {
        if n <= 128 {
            return block_sum(x, 0, n, mean, squared);
        }
        let (mut starts, mut lengths, mut visits, mut sums) =
            ([0; 64], [0; 64], [0; 64], [0.0; 64]);
        let mut top: i64 = 0;
        lengths[0] = n;
        let mut done = 0;
        while top >= 0 {
            let t = top as usize;
            let (lo, length) = (starts[t], lengths[t]);
            if length <= 128 {
                sums[done] = block_sum(x, lo, length, mean, squared);
                done += 1;
                top -= 1;
                continue;
            }
            let mut half = length / 2;
            half -= half % 8;
            let visit = visits[t];
            visits[t] += 1;
            if visit < 2 {
                starts[t + 1] = if visit == 0 { lo } else { lo + half };
                lengths[t + 1] = if visit == 0 { half } else { length - half };
                visits[t + 1] = 0;
                top += 1;
            } else {
                done -= 1;
                sums[done - 1] += sums[done];
                top -= 1;
            }
        }
        sums[0]
    }

    #[test]
    fn recursion_is_the_stack() {
        let mut seed: u64 = 12345;
        let x: Vec<f64> = (0..5000)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 1e3
            })
            .collect();
        for n in [
            0, 1, 7, 8, 9, 127, 128, 129, 255, 256, 1000, 1027, 4096, 5000,
        ] {
            for squared in [false, true] {
                let a = pairwise_sum(&x, 0, n, 0.3, squared);
                let b = stack_sum(&x, n, 0.3, squared);
                assert_eq!(a.to_bits(), b.to_bits(), "n={n}");
            }
        }
    }
}
