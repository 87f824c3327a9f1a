"""Type stubs of the extension module (native/src/*.rs); shipped in the wheel, and read by mypy
from the repository (pyproject.toml's mypy_path) where the extension is not installed."""

import numpy as np
from numpy.typing import NDArray

_Floats = NDArray[np.float64]
_Ints = NDArray[np.int64]
_Bools = NDArray[np.bool_]

API_VERSION: int

def adwin_update_batch(
    values: _Floats,
    params: _Floats,
    sums: _Floats,
    counts: _Ints,
    totals: _Floats,
    variances: _Floats,
    used: _Ints,
    hit_index: _Ints,
    hit_statistic: _Floats,
) -> int: ...
def cusum_scan(
    values: _Floats,
    rows: _Ints,
    signs: _Floats,
    allowances: _Floats,
    thresholds: _Floats,
    min_instances: float,
    state: _Floats,
    sums: _Floats,
    hit_index: _Ints,
    hit_statistic: _Floats,
    hit_row: _Ints,
) -> int: ...
def moments(x: _Floats, large: float, out: _Floats) -> bool: ...
def page_hinkley_update_batch(
    values: _Floats,
    params: _Floats,
    mode: int,
    state: _Floats,
    hit_index: _Ints,
    hit_statistic: _Floats,
) -> int: ...
def cdf_gaps(
    ref_values: _Floats, ref_weights: _Floats, win_values: _Floats, win_weights: _Floats
) -> tuple[_Floats, _Floats, float]: ...
def pool_small(reference: _Ints, window: _Ints, min_expected: float) -> tuple[bool, _Bools]: ...
def pool_counts(reference: _Ints, window: _Ints, small: _Bools) -> tuple[_Ints, _Ints]: ...
def chi_square_terms(reference: _Ints, window: _Ints) -> tuple[bool, _Floats, int]: ...
def psi_parts(
    reference: _Ints, window: _Ints, smoothing: float
) -> tuple[bool, _Floats, _Floats]: ...
def add_to_bins(bins: _Ints, cuts: _Floats, values: _Floats) -> None: ...
def decode_prediction_columns(
    values: list[bytes | None], max_message_bytes: int, max_events_per_message: int
) -> tuple[
    list[
        tuple[
            str,
            str | None,
            tuple[str, ...],
            bool,
            _Ints,
            _Ints,
            list[_Floats | list[str | None] | None],
            list[str | None],
            _Floats,
            float,
            int,
        ]
    ],
    list[int],
]: ...
def split_moments(values: _Floats, large: float, out: _Floats) -> tuple[_Floats, _Ints, bool]: ...
def fill_period(
    values: _Floats, missing: _Bools, cuts: _Floats, bins: _Ints, large: float, out: _Floats
) -> tuple[_Floats, bool]: ...
def numeric_detect(
    values: _Floats,
    mean: float,
    scale: float,
    bounded: bool,
    large: float,
    clip_sigma: float,
    adwin_params: _Floats,
    adwin_sums: _Floats,
    adwin_counts: _Ints,
    adwin_totals: _Floats,
    adwin_variances: _Floats,
    adwin_used: _Ints,
    rows: _Ints,
    signs: _Floats,
    allowances: _Floats,
    thresholds: _Floats,
    min_instances: float,
    n: float,
    bank_mean: float,
    bank_sums: _Floats,
) -> tuple[_Floats, list[tuple[int, float]], list[tuple[int, float, int]], float, float]: ...
