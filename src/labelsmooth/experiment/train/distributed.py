"""Data-parallel training over ``torchrun``: the hooks the recipe calls when it runs in W processes.

``torchrun --nproc-per-node W -m labelsmooth train …`` starts W copies of the recipe with
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set.
:meth:`DataParallel.from_env` sees them and joins the process group (gloo for CPU tensors;
with CUDA also NCCL for CUDA tensors, each rank on ``cuda:LOCAL_RANK``); otherwise the recipe
runs as one process through :class:`SingleProcess`, the same hooks with nothing to share
(:func:`processes_from_env` picks one). The loop stays the same loop; what changes:

* **Data.** Every rank draws the whole global batch of ``batch_size`` examples from the same
  ``(seed, epoch)`` generator as a single process would, and keeps its contiguous slice
  (:func:`split_batch`: rank r of W gets rows ``[⌊r·B/W⌋, ⌊(r+1)·B/W⌋)``, so a ragged last
  batch is split with sizes differing by at most one). So the data stream, augmentation included, is
  exactly the single-process one, and the generator state saved in a checkpoint is the same on
  every rank. The cost is assembling the global batch W times, small next to the model.
* **Gradients.** The model is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`,
  which averages gradients over the ranks. Each rank's mean loss over its ``n_r`` examples
  (tokens, for a language model) is scaled by ``n_r · W / N`` with ``N = Σ_r n_r`` (one
  all-reduce per step), so the averaged gradient is the gradient of the global mean
  ``Σ_r n_r·loss_r / N``, the single-process loss of the same global batch, also when shards
  are uneven.
* **Batch norm.** Batch statistics must be those of the global batch, so every batch-norm layer
  normalises with mean and variance all-reduced over the ranks (:func:`global_batchnorm`,
  differentiable, two collectives per layer; running statistics then agree on every rank).
  torch's ``SyncBatchNorm`` does this on GPUs only; this one runs on any device.
* **Metrics.** The training loss is summed over ranks as ``Σ n_r·loss_r`` and ``Σ n_r`` each
  step; evaluation runs on each rank's shard of the test data when the task's ``evaluate``
  accepts ``rank`` and ``world_size`` (it all-reduces its summable state, e.g.
  :meth:`~labelsmooth.metrics.CalibrationMeter.all_reduce`), and on the whole test data on every
  rank otherwise. Either way every rank holds the same history.
* **Files and output.** Only rank 0 writes checkpoints and ``result.json``, logs and draws
  progress bars; on resume every rank reads the same checkpoint (one machine, or a shared
  folder). Ctrl-C on any rank stops all of them at the same step.

The process group is destroyed when training ends or fails (unless the caller created it).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from labelsmooth.experiment.data import epoch_generator

__all__ = [
    "DataParallel",
    "SingleProcess",
    "processes_from_env",
    "world_size_from_env",
    "check_batch_size",
    "split_batch",
    "global_batchnorm",
    "local_batchnorm",
]

TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
Value = TypeVar("Value")


def world_size_from_env(environ: Mapping[str, str] | None = None) -> int:
    """``WORLD_SIZE`` set by torchrun (1 when unset)."""
    env = os.environ if environ is None else environ
    text = env.get("WORLD_SIZE")
    if text is None or text.strip() == "":
        return 1
    try:
        world = int(text)
    except ValueError:
        world = 0
    if world < 1:
        raise ValueError(f"WORLD_SIZE must be an integer >= 1, got WORLD_SIZE={text!r}")
    return world


def check_batch_size(batch_size: int, world_size: int) -> None:
    """Refuse a global batch that the ``world_size`` processes cannot share evenly."""
    if batch_size % world_size != 0:
        raise ValueError(
            f"batch_size={batch_size} is not divisible by the {world_size} processes of this "
            f"torchrun job (WORLD_SIZE={world_size}): each process takes batch_size / "
            f"{world_size} examples of every global batch; use a multiple of {world_size}"
        )


# --------------------------------------------------------------------------- batches


def _rows(batch: Any) -> set[int]:
    """The leading sizes of every tensor in a (nested tuple/list/dict of) tensor(s)."""
    if isinstance(batch, torch.Tensor):
        return {batch.shape[0]} if batch.dim() > 0 else {-1}
    if isinstance(batch, (tuple, list)):
        return set().union(*(_rows(b) for b in batch)) if batch else {-1}
    if isinstance(batch, dict):
        return set().union(*(_rows(b) for b in batch.values())) if batch else {-1}
    return {-1}


def _take(batch: Any, start: int, stop: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[start:stop]
    if isinstance(batch, (tuple, list)):
        return type(batch)(_take(b, start, stop) for b in batch)
    return {k: _take(v, start, stop) for k, v in batch.items()}


def split_batch(batch: Any, rank: int, world_size: int) -> Any:
    """Rank ``rank``'s contiguous slice of a global batch (along dimension 0).

    ``batch`` is a tensor or a tuple, list or dict (nested) of tensors that all have the same
    leading size B. Rank r gets rows ``[⌊r·B/W⌋, ⌊(r+1)·B/W⌋)``, so shard sizes differ by at
    most one (25 rows over 2 ranks: 12 and 13).

    Raises:
        TypeError: if the batch holds anything else, or tensors of different leading sizes
            (give the task a ``shard_batch(batch, rank, world_size)`` method).
        ValueError: if B < W (some rank would get no example).

    Example:
        >>> import torch
        >>> x, y = torch.arange(10).reshape(5, 2), torch.arange(5)
        >>> [split_batch((x, y), r, 2)[1].tolist() for r in range(2)]
        [[0, 1], [2, 3, 4]]
    """
    sizes = _rows(batch)
    if len(sizes) != 1 or -1 in sizes:
        raise TypeError(
            f"cannot split a batch of type {type(batch).__name__} over processes: expected "
            "tensors (or tuples, lists, dicts of them) with one common leading size; give the "
            "task a shard_batch(batch, rank, world_size) method"
        )
    (b,) = sizes
    if b < world_size:
        raise ValueError(
            f"a batch of {b} example(s) cannot be shared by {world_size} processes (the last "
            "batch of an epoch holds the remainder of the training set); choose a training "
            f"size whose remainder modulo the batch size is 0 or at least {world_size}"
        )
    return _take(batch, rank * b // world_size, (rank + 1) * b // world_size)


# --------------------------------------------------------------------------- batch norm


class _SumOverRanks(torch.autograd.Function):
    """``y = Σ_r x_r`` on every rank. Backward: each x_r feeds every rank's y, so
    ``∂L/∂x_r = Σ_k ∂L_k/∂y_k``, the all-reduced incoming gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        g = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(g)
        return g


def _sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = _SumOverRanks.apply(x)
    return out


class _GlobalBatchNorm:
    """Mixin placed before a batch-norm class: training-mode statistics over all ranks.

    With ``x`` of shape (B_r, C, *) on rank r, ``n = Σ_r B_r·∏*`` and sums over every rank's
    batch and spatial positions:

    .. math::
        \\mu_c = \\frac{1}{n}\\sum x_c, \\qquad
        \\sigma^2_c = \\frac{1}{n}\\sum (x_c - \\mu_c)^2, \\qquad
        y = \\gamma_c \\frac{x - \\mu_c}{\\sqrt{\\sigma^2_c + \\epsilon}} + \\beta_c

    exactly the single-process batch norm of the concatenated batch. The sums go through the
    differentiable all-reduce :class:`_SumOverRanks` (its backward all-reduces the
    gradient), so autograd gives the gradient of the global normalisation. Running statistics
    use the unbiased ``σ²·n/(n−1)`` as ``nn.BatchNorm`` does. Outside training mode, or without
    an initialised process group of more than one rank, the layer is the original one.
    """

    training: bool
    momentum: float | None
    eps: float
    affine: bool
    track_running_stats: bool
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    running_mean: torch.Tensor | None
    running_var: torch.Tensor | None
    num_batches_tracked: torch.Tensor | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)  # type: ignore[misc]
        dims = [0, *range(2, x.dim())]  # every axis but the channels
        shape = [1, -1] + [1] * (x.dim() - 2)  # (1, C, 1, ...)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        sum_count = _sum_over_ranks(torch.cat([x.sum(dims), count]))  # (C + 1,): Σx, n
        n = sum_count[-1].detach()
        mean = sum_count[:-1] / n  # (C,)
        xc = x - mean.view(shape)
        var = _sum_over_ranks((xc * xc).sum(dims)) / n  # (C,) biased, used to normalise
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            assert self.weight is not None and self.bias is not None
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach() * n / (n - 1).clamp(min=1))
        return y

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        assert self.num_batches_tracked is not None
        assert self.running_mean is not None and self.running_var is not None
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)


_GLOBAL_CLASSES: dict[type, type] = {}


def _global_class(cls: type) -> type:
    if cls not in _GLOBAL_CLASSES:
        _GLOBAL_CLASSES[cls] = type(f"Global{cls.__name__}", (_GlobalBatchNorm, cls), {})
    return _GLOBAL_CLASSES[cls]


def global_batchnorm(model: nn.Module) -> nn.Module:
    """Make every batch-norm layer of ``model`` normalise over all ranks' batches (in place).

    Each ``nn.BatchNorm1d/2d/3d`` (any subclass of torch's ``_BatchNorm`` except
    ``SyncBatchNorm``) changes class to ``Global<Name>`` (:class:`_GlobalBatchNorm` before the
    original class), keeping its parameters, buffers, hooks and state-dict keys: a checkpoint
    is the same as a single-process one. :func:`local_batchnorm` undoes it.
    """
    for m in model.modules():
        cls = type(m)
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(
            m, (nn.SyncBatchNorm, _GlobalBatchNorm)
        ):
            m.__class__ = _global_class(cls)
    return model


def local_batchnorm(model: nn.Module) -> nn.Module:
    """Undo :func:`global_batchnorm` (in place): every layer gets its original class back."""
    for m in model.modules():
        if isinstance(m, _GlobalBatchNorm):
            m.__class__ = type(m).__bases__[1]
    return model


# --------------------------------------------------------------------------- the hooks


class DataParallel:
    """This process's place in a torchrun job and the recipe's data-parallel hooks.

    Build it with :meth:`from_env`; the recipe calls :meth:`prepare_model` / :meth:`wrap` on the
    model, :meth:`shard` on each batch, :meth:`reduce_step` between forward and backward,
    :meth:`evaluate`, :meth:`any` and finally :meth:`close`.

    Attributes:
        rank: This process's rank r in [0, W).
        local_rank: Its rank on this machine (the CUDA device index).
        world_size: W.
    """

    def __init__(self, rank: int, local_rank: int, world_size: int, owns_group: bool) -> None:
        self.rank, self.local_rank, self.world_size = rank, local_rank, world_size
        self.owns_group = owns_group

    @classmethod
    def from_env(cls, batch_size: int) -> DataParallel | None:
        """Join torchrun's process group when ``WORLD_SIZE`` > 1 (else None).

        Checks ``batch_size`` and the torchrun variables first (``ValueError`` naming them).
        Backend: gloo, or ``cpu:gloo,cuda:nccl`` when CUDA is available (then this process's
        current CUDA device is ``cuda:LOCAL_RANK``, where a task should build its model). An
        already initialised group (a caller's own) is used as is and left open.
        """
        world = world_size_from_env()
        if world <= 1:
            return None
        check_batch_size(batch_size, world)
        missing = [k for k in TORCHRUN_ENV if not os.environ.get(k)]
        if missing:
            raise ValueError(
                f"WORLD_SIZE={world} is set but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not: start data-parallel training "
                "with torchrun (or python -m torch.distributed.run)"
            )
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        if dist.is_initialized():
            if dist.get_world_size() != world or dist.get_rank() != rank:
                raise ValueError(
                    f"the initialised process group (rank {dist.get_rank()} of "
                    f"{dist.get_world_size()}) is not RANK={rank} of WORLD_SIZE={world}"
                )
            return cls(rank, local_rank, world, owns_group=False)
        backend = "gloo"
        if torch.cuda.is_available() and local_rank < torch.cuda.device_count():
            torch.cuda.set_device(local_rank)
            backend = "cpu:gloo,cuda:nccl"
        dist.init_process_group(backend)
        return cls(rank, local_rank, world, owns_group=True)

    @property
    def is_writer(self) -> bool:
        """Whether this rank writes files, logs and progress bars (rank 0)."""
        return self.rank == 0

    def close(self) -> None:
        """Destroy the process group if :meth:`from_env` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def rank0_first(self, fn: Callable[[], Value]) -> Value:
        """``fn()`` on rank 0, then on the others (say, a download into a shared cache).

        If rank 0 fails, the others raise too instead of waiting for it.
        """
        ok = torch.ones(1)
        if self.rank == 0:
            try:
                value = fn()
            except BaseException:
                dist.broadcast(torch.zeros(1), src=0)
                raise
            dist.broadcast(ok, src=0)
            return value
        dist.broadcast(ok, src=0)
        if not ok.item():
            raise ValueError("rank 0 could not prepare the task (see its error)")
        return fn()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (one all-reduce)."""
        t = torch.tensor([float(flag)])
        dist.all_reduce(t)
        return bool(t.item() > 0)

    # ---------------------------------------------------------------------- model

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Batch norm over the global batch (:func:`global_batchnorm`); before the optimiser."""
        return global_batchnorm(model)

    def wrap(self, model: nn.Module) -> nn.Module:
        """``DistributedDataParallel(model)`` on the model's device (after any restore)."""
        from torch.nn.parallel import DistributedDataParallel

        param = next(model.parameters(), None)
        if param is not None and param.device.type == "cuda":
            return DistributedDataParallel(model, device_ids=[param.device.index])
        return DistributedDataParallel(model)

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The trained model as a single process would have it (:func:`local_batchnorm`)."""
        return local_batchnorm(model)

    # ---------------------------------------------------------------------- steps

    def shard(self, task: Any, batch: Any) -> Any:
        """This rank's part of a global batch: ``task.shard_batch`` if the task has one, else
        :func:`split_batch`."""
        custom = getattr(task, "shard_batch", None)
        if custom is not None:
            return custom(batch, self.rank, self.world_size)
        return split_batch(batch, self.rank, self.world_size)

    def check_batches(self, task: Any, seed: int) -> None:
        """Split the first epoch's last batch now, so that a batch that some rank would get
        nothing of (or that :func:`split_batch` cannot split) is refused before training,
        not at the end of the first epoch."""
        steps = task.num_batches()
        if steps > 0:
            last = next(iter(task.train_batches(epoch_generator(seed, 0), steps - 1, None)), None)
            if last is not None:
                self.shard(task, last)

    def reduce_step(
        self, loss: torch.Tensor, n: int, stop: bool
    ) -> tuple[torch.Tensor, float, int, bool]:
        """One all-reduce per step, between forward and backward.

        Args:
            loss: This rank's mean loss over its ``n`` examples (or tokens).
            n: Its example count ``n_r``.
            stop: Whether Ctrl-C was pressed here.

        Returns:
            ``(loss · n_r·W/N, Σ_r n_r·loss_r, N, stop on any rank)``: backpropagating the
            first and averaging gradients over W ranks (DDP) gives the gradient of the global
            mean ``Σ_r n_r·loss_r / N``.
        """
        stats = torch.stack(
            [
                loss.detach().to(torch.float64) * n,
                torch.tensor(float(n), dtype=torch.float64, device=loss.device),
                torch.tensor(float(stop), dtype=torch.float64, device=loss.device),
            ]
        )
        dist.all_reduce(stats)
        loss_sum, total, stops = stats.tolist()
        scale = n * self.world_size / total if total > 0 else 0.0
        return loss * scale, loss_sum, int(round(total)), stops > 0

    def evaluate(self, task: Any, model: nn.Module) -> dict[str, float]:
        """The task's test metrics, the same on every rank: on this rank's shard of the test
        data when ``task.evaluate`` accepts ``rank`` and ``world_size``, else on all of it."""
        if _accepts(task.evaluate, "rank", "world_size"):
            metrics: dict[str, float] = task.evaluate(
                model, rank=self.rank, world_size=self.world_size
            )
            return metrics
        return dict(task.evaluate(model))


class SingleProcess:
    """The stand-in for :class:`DataParallel` when the recipe runs as one process: the same
    hooks, each the identity (or the plain single-process computation), so that the recipe has
    one code path.

    Attributes:
        rank: 0.
        world_size: 1.
    """

    rank, local_rank, world_size = 0, 0, 1
    is_writer = True

    def close(self) -> None:
        """Nothing to release."""

    def rank0_first(self, fn: Callable[[], Value]) -> Value:
        """``fn()``."""
        return fn()

    def any(self, flag: bool) -> bool:
        """``flag``."""
        return flag

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """The model as it is."""
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model as it is (no gradient all-reduce)."""
        return model

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The model as it is."""
        return model

    def shard(self, task: Any, batch: Any) -> Any:
        """The whole batch."""
        return batch

    def check_batches(self, task: Any, seed: int) -> None:
        """Nothing to check: one process takes every batch."""

    def reduce_step(
        self, loss: torch.Tensor, n: int, stop: bool
    ) -> tuple[torch.Tensor, float, int, bool]:
        """``(loss, loss·n, n, stop)``: the shape of :meth:`DataParallel.reduce_step`'s answer."""
        return loss, float(loss.detach()) * n, n, stop

    def evaluate(self, task: Any, model: nn.Module) -> dict[str, float]:
        """The task's test metrics."""
        return dict(task.evaluate(model))


def processes_from_env(batch_size: int) -> DataParallel | SingleProcess:
    """:meth:`DataParallel.from_env` under torchrun (``WORLD_SIZE`` > 1), else
    :class:`SingleProcess`."""
    parallel = DataParallel.from_env(batch_size)
    return SingleProcess() if parallel is None else parallel


def _accepts(fn: Callable[..., Any], *names: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return all(name in params for name in names)
