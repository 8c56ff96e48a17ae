"""Calibration metrics, a streaming meter, temperature scaling, the Müller et al. projection
and cluster tightness.

Functions take probabilities (N, C) unless their name says logits; everything is computed in
float64. Plots live in :mod:`labelsmooth.experiment.plotting` (needs the ``plot`` extra).
"""

from labelsmooth.metrics._functional import (
    brier_score,
    classwise_calibration_error,
    evaluate_calibration,
    expected_calibration_error,
    negative_log_likelihood,
    negative_log_likelihood_from_logits,
    top_k_accuracy,
)
from labelsmooth.metrics.clusters import cluster_tightness
from labelsmooth.metrics.meter import CalibrationMeter
from labelsmooth.metrics.projection import penultimate_projection
from labelsmooth.metrics.temperature import fit_temperature

__all__ = [
    "expected_calibration_error",
    "classwise_calibration_error",
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
