"""Framework-free drift detection: summaries, change detectors and per-feature monitors.

Nothing here knows about Kafka, Faust or Redis: monitors take numpy arrays of values tagged
with opaque integer positions, return :class:`Detection` objects and serialise to bytes.
"""

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
