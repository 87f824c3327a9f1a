"""Framework-free drift detection: summaries, change detectors and per-feature monitors.

Nothing here knows about Kafka, Faust or Redis: monitors take numpy arrays of values tagged
with opaque integer positions, return :class:`Detection` objects and serialise to bytes.
"""

# Imported on first use (PEP 562): importing a light part — ``detectors.kernels``, the config —
# does not load river and scipy (~0.7 s), which every command line call would otherwise pay.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamdrift.detectors.adwin import Adwin
    from streamdrift.detectors.base import ChangeDetector
    from streamdrift.detectors.baseline import Baseline, BaselineBuilder, baseline_from_statistics
    from streamdrift.detectors.config import (
        AdwinParams,
        ModelRouting,
        MonitorParams,
        PageHinkleyParams,
        WindowParams,
        allowed_features,
        ignored_features,
        is_ignored,
        model_routing,
        model_task,
        multivariate_params,
        resolve,
        segment_features,
        validate_config,
    )
    from streamdrift.detectors.monitor import (
        FORMAT_VERSION,
        CategoricalMonitor,
        Detection,
        ErrorMonitor,
        Monitor,
        NumericMonitor,
        StateError,
        UnivariateMonitor,
        merge_summaries,
        monitor_from_bytes,
        severity,
    )
    from streamdrift.detectors.multivariate import (
        CoMoments,
        MultivariateParams,
        MultivariateProfile,
        PCAReconstruction,
        PCAReconstructionMonitor,
    )
    from streamdrift.detectors.page_hinkley import PageHinkley
    from streamdrift.detectors.sketches import CategoryCounts, QuantileSketch
    from streamdrift.detectors.stats import RunningStats

_EXPORTS = {
    "Adwin": "adwin",
    "ChangeDetector": "base",
    "Baseline": "baseline",
    "BaselineBuilder": "baseline",
    "baseline_from_statistics": "baseline",
    "AdwinParams": "config",
    "ModelRouting": "config",
    "MonitorParams": "config",
    "PageHinkleyParams": "config",
    "WindowParams": "config",
    "allowed_features": "config",
    "ignored_features": "config",
    "is_ignored": "config",
    "model_routing": "config",
    "model_task": "config",
    "multivariate_params": "config",
    "resolve": "config",
    "segment_features": "config",
    "validate_config": "config",
    "FORMAT_VERSION": "monitor",
    "CategoricalMonitor": "monitor",
    "Detection": "monitor",
    "ErrorMonitor": "monitor",
    "Monitor": "monitor",
    "NumericMonitor": "monitor",
    "StateError": "monitor",
    "UnivariateMonitor": "monitor",
    "merge_summaries": "monitor",
    "monitor_from_bytes": "monitor",
    "severity": "monitor",
    "CoMoments": "multivariate",
    "MultivariateParams": "multivariate",
    "MultivariateProfile": "multivariate",
    "PCAReconstruction": "multivariate",
    "PCAReconstructionMonitor": "multivariate",
    "PageHinkley": "page_hinkley",
    "CategoryCounts": "sketches",
    "QuantileSketch": "sketches",
    "RunningStats": "stats",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "FORMAT_VERSION",
    "Adwin",
    "AdwinParams",
    "Baseline",
    "BaselineBuilder",
    "CategoricalMonitor",
    "CategoryCounts",
    "ChangeDetector",
    "CoMoments",
    "Detection",
    "ErrorMonitor",
    "ModelRouting",
    "Monitor",
    "MonitorParams",
    "MultivariateParams",
    "MultivariateProfile",
    "NumericMonitor",
    "PCAReconstruction",
    "PCAReconstructionMonitor",
    "PageHinkley",
    "PageHinkleyParams",
    "QuantileSketch",
    "RunningStats",
    "StateError",
    "UnivariateMonitor",
    "WindowParams",
    "allowed_features",
    "baseline_from_statistics",
    "ignored_features",
    "is_ignored",
    "merge_summaries",
    "model_routing",
    "model_task",
    "monitor_from_bytes",
    "multivariate_params",
    "resolve",
    "segment_features",
    "severity",
    "validate_config",
]
