"""Calibration metrics, a streaming meter, temperature scaling, the Müller et al. projection
and cluster tightness.

One module per metric family: :mod:`~labelsmooth.metrics.calibration` (ECE / RMSCE / MCE,
class-wise ECE, reliability bins), :mod:`~labelsmooth.metrics.scoring` (NLL, Brier score),
:mod:`~labelsmooth.metrics.classification` (top-k accuracy), :mod:`~labelsmooth.metrics.panel`
(all of them from logits); :mod:`~labelsmooth.metrics.meter` streams the panel,
:mod:`~labelsmooth.metrics.temperature` fits a temperature. Functions take probabilities (N, C)
unless their name says logits; everything is computed in float64. The experiment application
draws the plots (:mod:`labelsmooth.experiment.plotting`, needs the ``plot`` extra).
"""

from labelsmooth.metrics.calibration import (
    calibration_error_from_bins,
    classwise_calibration_error,
    expected_calibration_error,
    reliability_bins,
)
from labelsmooth.metrics.classification import top_k_accuracy
from labelsmooth.metrics.clusters import cluster_tightness
from labelsmooth.metrics.meter import CalibrationMeter
from labelsmooth.metrics.panel import evaluate_calibration
from labelsmooth.metrics.projection import penultimate_projection
from labelsmooth.metrics.scoring import (
    brier_score,
    negative_log_likelihood,
    negative_log_likelihood_from_logits,
)
from labelsmooth.metrics.temperature import fit_temperature

__all__ = [
    "expected_calibration_error",
    "classwise_calibration_error",
    "reliability_bins",
    "calibration_error_from_bins",
    "negative_log_likelihood",
    "negative_log_likelihood_from_logits",
    "brier_score",
    "top_k_accuracy",
    "evaluate_calibration",
    "CalibrationMeter",
    "fit_temperature",
    "penultimate_projection",
    "cluster_tightness",
]
