"""Streaming calibration meter: accumulate per-batch sufficient statistics, compute at the end.

The meter holds only sums, never the probabilities: O(n_bins + K) numbers for the top-label
binned metrics, NLL, Brier score and K top-k accuracies (plus C·n_bins with ``classwise=True``).
All the arithmetic is in :mod:`labelsmooth.metrics.panel` (which calls the helpers of every
metric family); this class only adds states.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from labelsmooth.metrics._checks import _prepare_logits
from labelsmooth.metrics.panel import _panel_arg_validation, _panel_compute, _panel_update

__all__ = ["CalibrationMeter"]


class CalibrationMeter:
    """Streaming ECE / RMSCE / MCE / NLL / Brier / top-k accuracy over batches of logits.

    Each :meth:`update` converts the logits to float64 probabilities ``softmax(logits / T)`` and
    adds the batch's sufficient statistics to the state: per equal-width bin the count, the sum of
    confidences and the number of correct top-1 predictions (bins ((m−1)/M, m/M] as in
    :func:`~labelsmooth.metrics.expected_calibration_error`), plus the summed NLL, summed Brier
    score, top-k hit counts and the sample count. :meth:`compute` then gives exactly what
    :func:`~labelsmooth.metrics.evaluate_calibration` gives on all the batches at once (up to
    float64 summation order).

    Equal-mass (quantile) binning is not available here: its edges depend on every confidence
    seen, which would need O(N) state. Use
    ``expected_calibration_error(probs, target, binning="quantile")`` on the gathered
    probabilities for that.

    For multi-process evaluation, let every rank update on its shard, call :meth:`all_reduce`
    once, then :meth:`compute`; the reduction sums the state in place, so calling it twice
    double-counts.

    Args:
        num_classes: number of classes C; logits must have C channels in dimension 1.
        n_bins: number of equal-width bins M ≥ 1.
        ignore_index: target value whose entries are skipped.
        topk: which top-k accuracies to report; k > C are dropped.
        temperature: T > 0 dividing the logits before the softmax.
        classwise: also accumulate the class-wise ECE ("cwece"), O(C·M) state.

    Example:
        >>> import torch
        >>> meter = CalibrationMeter(num_classes=3, n_bins=10)
        >>> meter.update(torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]]), torch.tensor([0, 1]))
        >>> meter.update(torch.tensor([[0.0, 0.0, 4.0]]), torch.tensor([0]))
        >>> m = meter.compute()
        >>> round(m["top1"], 4), m["count"], "top5" in m
        (0.6667, 3.0, False)
    """

    def __init__(
        self,
        num_classes: int,
        n_bins: int = 15,
        ignore_index: int | None = None,
        topk: Sequence[int] = (1, 5),
        *,
        temperature: float = 1.0,
        classwise: bool = False,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f"num_classes must be a positive integer, got num_classes={num_classes!r}"
            )
        ks = _panel_arg_validation(n_bins, ignore_index, temperature, topk)
        self.num_classes = num_classes
        self.n_bins = n_bins
        self.ignore_index = ignore_index
        self.topk = tuple(k for k in ks if k <= num_classes)
        self.temperature = float(temperature)
        self.classwise = classwise
        self.state: dict[str, Tensor] = {}
        self.reset()

    def reset(self) -> None:
        """Zero the state (kept on the device of the last update)."""
        device = self.state["count"].device if self.state else torch.device("cpu")
        f64 = torch.float64
        self.state = {
            "bins": torch.zeros(3, self.n_bins, dtype=f64, device=device),
            "nll": torch.zeros((), dtype=f64, device=device),
            "brier": torch.zeros((), dtype=f64, device=device),
            "topk": torch.zeros(len(self.topk), dtype=f64, device=device),
            "count": torch.zeros((), dtype=f64, device=device),
        }
        if self.classwise:
            self.state["classwise"] = torch.zeros(
                3, self.num_classes, self.n_bins, dtype=f64, device=device
            )

    def update(self, logits: Tensor, target: Tensor) -> None:
        """Add one batch.

        Args:
            logits: (N, C) or (N, C, d1, …) logits, any floating dtype (as ``F.cross_entropy``);
                a ``-inf`` logit masks its class.
            target: (N,) or (N, d1, …) integer class indices (or ``ignore_index``).

        Raises:
            ValueError: bad shapes or targets, or NaN / ``+inf`` logits (or a row of only
                ``-inf``) in an entry that is not ignored; the state is then left unchanged.
        """
        # (N', C), (N',): flattened, ignored entries dropped, values and targets checked
        logits, target = _prepare_logits(logits, target, self.ignore_index, self.num_classes)
        batch = _panel_update(
            logits, target, self.n_bins, self.topk, self.temperature, self.classwise
        )
        if self.state["count"].device != logits.device:
            self.state = {k: v.to(logits.device) for k, v in self.state.items()}
        for key, value in batch.items():
            self.state[key] += value

    def compute(self) -> dict[str, float]:
        """The metrics over everything seen since the last :meth:`reset`.

        Returns:
            dict with "ece", "rmsce", "mce", "nll", "brier", "top{k}" (k ≤ C), "cwece" (with
            ``classwise``) and "count"; metrics are NaN when count is 0.
        """
        return _panel_compute(self.state, self.topk)

    def all_reduce(self, group: dist.ProcessGroup | None = None) -> None:
        """Sum the state over the ranks of ``group`` in place (one collective).

        A no-op when ``torch.distributed`` is unavailable or not initialized. Call it once, after
        the last update and before :meth:`compute`. With the NCCL backend the state must be on
        the GPU, which it is after an update with CUDA logits.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return
        keys = list(self.state)
        flat = torch.cat([self.state[k].reshape(-1) for k in keys])  # one buffer, one call
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        offset = 0
        for k in keys:
            n = self.state[k].numel()
            self.state[k] = flat[offset : offset + n].reshape(self.state[k].shape).clone()
            offset += n

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}, n_bins={self.n_bins}, "
            f"ignore_index={self.ignore_index}, topk={self.topk}, count={int(self.state['count'])})"
        )
