"""The language-model task: a character-level Transformer on Shakespeare's plays (:class:`Task`).

What is learned, read top to bottom:

* **data** (:func:`prepare_text`): the verified corpus split by play
  (:func:`labelsmooth.experiment.data.load_shakespeare`), each split's plays packed into sequences
  of
  whole speeches of at most ``seq_len + 1`` characters
  (:func:`labelsmooth.experiment.data.pack_sequences`;
  their lengths vary), the training split subset to ``train_size`` sequences, the validation
  split cut to ``val_size`` sequences;
* **batches**: ``batch_size`` sequences in an order drawn from the epoch's generator,
  right-padded with the padding token :data:`~labelsmooth.experiment.data.PAD`
  (:func:`labelsmooth.experiment.data.pad_batch`);
* **loss** (:meth:`LanguageModel.loss`): the head by :func:`labelsmooth.linear_cross_entropy`
  (the ``(B, T, V)`` logits are never materialized) with ``ignore_index=PAD`` (padding is not
  a target) and ``class_mask`` False at PAD (no smoothing mass on padding), ``return_nll=True``;
  the loop averages it over the counted tokens;
* **metrics** (:meth:`LanguageModel.evaluate`, every epoch, on the test plays): the smoothed
  loss at the run's ε, the true NLL (nats per character) and the perplexity ``exp(NLL)`` (from
  the true NLL, never from the smoothed loss), top-1 / top-5 next-token accuracy and the
  token-level ECE (:class:`~labelsmooth.metrics.CalibrationMeter` over every non-padding
  token); the temperature T fitted on the validation plays
  (:func:`~labelsmooth.metrics.fit_temperature`) and the test NLL and ECE after dividing the
  logits by T.

Its options (``TrainConfig.options``: ``seq_len``, ``d_model``, ``n_layers``, ``n_heads``,
with the flags ``--seq-len``, ``--d-model``, ``--layers``, ``--heads``), its one regime and its
report columns are declared in :data:`SPEC`. Progress bars, checkpoints, resume and
``result.json`` come from the loop (:func:`labelsmooth.experiment.train.train`), and the
comparison (``compare --task lm``) from :func:`labelsmooth.experiment.train.compare.run_compare`,
as for the image task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import labelsmooth
from labelsmooth.experiment.config import FieldRule, TrainConfig
from labelsmooth.experiment.data import (
    PAD,
    TEXT_DATASETS,
    TextCorpus,
    load_shakespeare,
    pack_sequences,
    pad_batch,
)
from labelsmooth.experiment.models import TransformerLM
from labelsmooth.experiment.report import count
from labelsmooth.experiment.tasks.headers import make_table_header
from labelsmooth.experiment.tasks.registry import (
    Column,
    Grid,
    LoadedTask,
    Metric,
    ModelSpec,
    TaskOption,
    TaskSpec,
    register_task,
)

__all__ = ["TextSplits", "LanguageModel", "prepare_text", "evaluate_lm", "LM_TRAIN", "SPEC"]


@dataclass(frozen=True)
class TextSplits:
    """Packed sequences of each split and the vocabulary.

    Attributes:
        corpus: The corpus (vocabulary, plays).
        train: Training sequences ``(L_i,)``, ``2 <= L_i <= seq_len + 1``.
        val: Validation sequences (the first ``val_size``; empty when 0).
        test: Test sequences (all of the test plays).
    """

    corpus: TextCorpus
    train: list[torch.Tensor]
    val: list[torch.Tensor]
    test: list[torch.Tensor]

    @property
    def vocab_size(self) -> int:
        return self.corpus.vocab_size


def prepare_text(
    config: TrainConfig,
    *,
    corpus: TextCorpus | None = None,
    log: Callable[[str], None] | None = print,
) -> TextSplits:
    """Load the corpus (unless given), pack each split, subset the training sequences.

    The training subset is ``train_size`` sequences drawn without replacement by
    ``data_seed`` (kept in corpus order), so every run of a comparison sees the same text.
    """
    if corpus is None:
        corpus = load_shakespeare(config.data_dir, log=log)

    seq_len = SPEC.option(config, "seq_len")

    def pack(plays: dict[str, str]) -> list[torch.Tensor]:
        return pack_sequences(list(plays.values()), corpus.encode, seq_len)

    train, val, test = pack(corpus.train), pack(corpus.val), pack(corpus.test)
    if config.train_size is not None and config.train_size < len(train):
        g = torch.Generator().manual_seed(config.data_seed)
        keep = torch.randperm(len(train), generator=g)[: config.train_size].sort().values
        train = [train[int(i)] for i in keep]
    return TextSplits(corpus, train, val[: config.val_size], test[: config.test_size])


def _batches(seqs: list[torch.Tensor], size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for s in range(0, len(seqs), size):
        yield pad_batch(seqs[s : s + size])  # (B, T), (B, T)


def _unwrap(model: nn.Module) -> TransformerLM:
    inner = getattr(model, "module", model)
    if not isinstance(inner, TransformerLM):
        raise TypeError(f"the lm task needs a TransformerLM, got {type(inner).__name__}")
    return inner


def _class_mask(vocab_size: int) -> torch.Tensor:
    """(V,) bool: every token but PAD receives smoothing mass."""
    mask = torch.ones(vocab_size, dtype=torch.bool)
    mask[PAD] = False
    return mask


@torch.no_grad()
def _token_logits(
    model: TransformerLM, seqs: list[torch.Tensor], batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Logits ``(n, V)`` and targets ``(n,)`` of the non-padding tokens, batch by batch."""
    for x, y in _batches(seqs, batch_size):
        logits = model.logits(x)  # (B, T, V)
        keep = y != PAD  # (B, T)
        yield logits[keep], y[keep]


@torch.no_grad()
def _validation_temperature(model: TransformerLM, data: TextSplits, batch_size: int) -> float:
    """T fitted on the validation tokens (:func:`~labelsmooth.metrics.fit_temperature`); 1
    without validation sequences."""
    from labelsmooth.metrics import fit_temperature

    if not data.val:
        return 1.0
    pairs = list(_token_logits(model, data.val, batch_size))
    val_logits = torch.cat([z for z, _ in pairs])  # (n_val, V)
    val_target = torch.cat([t for _, t in pairs])  # (n_val,)
    return float(fit_temperature(val_logits, val_target))


def _sum_over_ranks(smoothed: float, nll: float, count: int) -> tuple[float, float, int]:
    import torch.distributed as dist

    sums = torch.tensor([smoothed, nll, count], dtype=torch.float64)
    dist.all_reduce(sums)
    return float(sums[0]), float(sums[1]), int(sums[2])


@torch.no_grad()
def evaluate_lm(
    model: TransformerLM,
    data: TextSplits,
    *,
    label_smoothing: float = 0.0,
    convention: str = "uniform",
    n_bins: int = 15,
    batch_size: int = 256,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, float]:
    """Test metrics of a language model (fractions, nats per token; model in eval mode).

    With ``world_size > 1`` (data-parallel runs) this rank evaluates every ``world_size``-th
    test sequence from ``rank`` on, and the sums (losses, token count, both calibration
    meters) are all-reduced over the default process group before computing, so every rank
    returns the metrics of the whole test set. The temperature is fitted on all validation
    sequences on every rank (identical models, identical fit).

    Returns:
        ``loss_smoothed`` (the training objective at ``label_smoothing`` on the test tokens),
        ``nll``, ``perplexity = exp(nll)``, ``top1``, ``top5``, ``ece``, ``tokens``;
        ``temperature`` (fitted on the validation sequences; 1 when there are none),
        ``nll_T`` and ``ece_T`` (after dividing the logits by it).
    """
    from labelsmooth.metrics import CalibrationMeter

    was_training = model.training
    model.eval()
    temperature = _validation_temperature(model, data, batch_size)
    mask = _class_mask(data.vocab_size)
    meter = CalibrationMeter(data.vocab_size, n_bins=n_bins)
    meter_t = CalibrationMeter(data.vocab_size, n_bins=n_bins, temperature=temperature)
    smoothed = nll = 0.0
    count = 0
    for x, y in _batches(data.test[rank::world_size], batch_size):
        h = model(x)  # (B, T, D)
        loss, nll_sum = labelsmooth.linear_cross_entropy(
            h,
            model.head.weight,
            y,
            ignore_index=PAD,
            reduction="sum",
            label_smoothing=label_smoothing,
            convention=convention,
            class_mask=mask,
            return_nll=True,
        )
        keep = y != PAD  # (B, T)
        logits = model.head(h[keep])  # (n, V)
        meter.update(logits, y[keep])
        meter_t.update(logits, y[keep])
        smoothed += float(loss)
        nll += float(nll_sum)
        count += int(keep.sum())
    model.train(was_training)
    if world_size > 1:  # every rank: the sums of all ranks' shards
        smoothed, nll, count = _sum_over_ranks(smoothed, nll, count)
        meter.all_reduce()
        meter_t.all_reduce()
    m, mt = meter.compute(), meter_t.compute()
    mean_nll = nll / max(1, count)
    return {
        "loss_smoothed": smoothed / max(1, count),
        "nll": mean_nll,
        "perplexity": math.exp(mean_nll),
        "top1": float(m["top1"]),
        "top5": float(m.get("top5", math.nan)),
        "ece": float(m["ece"]),
        "temperature": temperature,
        "nll_T": float(mt["nll"]),
        "ece_T": float(mt["ece"]),
        "tokens": float(count),
    }


@dataclass
class LanguageModel(LoadedTask[TextSplits]):
    """Character-level language modelling with label-smoothed cross-entropy (:class:`Task`).
    ``LanguageModel.from_config(config)`` loads the data and builds it.

    Args:
        config: The run (``task="lm"``: model size, context, batch size, smoothing, ECE bins).
        data: The packed splits (:func:`prepare_text`).
    """

    load_data = staticmethod(prepare_text)

    def __post_init__(self) -> None:
        self._mask = _class_mask(self.data.vocab_size)

    def num_batches(self) -> int:
        return math.ceil(len(self.data.train) / self.config.batch_size)

    def build_model(self) -> nn.Module:
        option = lambda key: SPEC.option(self.config, key)  # noqa: E731
        return TransformerLM(
            self.data.vocab_size,
            d_model=option("d_model"),
            n_layers=option("n_layers"),
            n_heads=option("n_heads"),
            max_len=option("seq_len"),
            padding_idx=PAD,
        )

    def train_batches(
        self, generator: torch.Generator, start: int, resume_state: torch.Tensor | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.data.train), generator=generator).tolist()  # (N,)
        if resume_state is not None:
            generator.set_state(resume_state)
        b = self.config.batch_size
        for s in range(start * b, len(order), b):
            yield pad_batch([self.data.train[i] for i in order[s : s + b]])  # (B, T), (B, T)

    def loss(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, int]:
        x, y = batch  # (B, T), (B, T); PAD past each sequence's end
        h = model(x)  # (B, T, D)
        head = _unwrap(model).head  # a DistributedDataParallel wrapper keeps it in .module
        loss, _nll = labelsmooth.linear_cross_entropy(
            h,
            head.weight,  # (V, D)
            y,
            ignore_index=PAD,
            label_smoothing=self.config.label_smoothing,
            convention=self.config.convention,
            class_mask=self._mask,
            return_nll=True,
        )
        return loss, int((y != PAD).sum())

    def evaluate(self, model: nn.Module, *, rank: int = 0, world_size: int = 1) -> dict[str, float]:
        return evaluate_lm(
            _unwrap(model),
            self.data,
            label_smoothing=self.config.label_smoothing,
            convention=self.config.convention,
            n_bins=self.config.n_bins,
            batch_size=self.config.eval_batch_size,
            rank=rank,
            world_size=world_size,
        )

    def describe(self, metrics: dict[str, float]) -> str:
        return (
            f"test NLL {metrics['nll']:.4f}  perplexity {metrics['perplexity']:.3f}  "
            f"top-1 {100 * metrics['top1']:.2f}%  ECE {100 * metrics['ece']:.2f}%  "
            f"T {metrics['temperature']:.3f}"
        )


# --------------------------------------------------------------------------- the declaration

#: The one regime of the language model: the TrainConfig defaults on Shakespeare.
LM_TRAIN = TrainConfig(task="lm", model="transformer", dataset="shakespeare")


def _summarize_run(task: Any, result: Any, arrays_path: Path | None) -> dict[str, Any]:
    """What a finished LM run adds to its comparison record (the last evaluation's metrics,
    temperature fitted on the validation plays included)."""
    m, data = result.metrics, task.data
    return {
        "metrics": m,
        "temperature": m["temperature"],
        "metrics_after_temperature": {"nll": m["nll_T"], "ece": m["ece_T"]},
        "sizes": {
            "train_sequences": len(data.train),
            "train_tokens": sum(int(s.numel()) - 1 for s in data.train),
            "val_sequences": len(data.val),
            "test_sequences": len(data.test),
            "test_tokens": int(m["tokens"]),
        },
    }


def _metric(key: str, scale: float, label: str) -> Metric:
    return Metric(lambda r: float(r["metrics"].get(key, math.nan)), scale, label)


#: Summary metrics (averaged over seeds).
_METRICS = {
    "perplexity": _metric("perplexity", 1.0, "test perplexity"),
    "nll": _metric("nll", 1.0, "test NLL (nats/char)"),
    "top1": _metric("top1", 100.0, "test top-1 (%)"),
    "ece": _metric("ece", 100.0, "test ECE (%)"),
    "T": Metric(lambda r: float(r["temperature"]), 1.0, "fitted temperature T"),
    "ece_T": _metric("ece_T", 100.0, "test ECE after T (%)"),
    "nll_T": _metric("nll_T", 1.0, "test NLL after T"),
    "loss_smoothed": _metric("loss_smoothed", 1.0, "test smoothed loss"),
    "seconds": Metric(lambda r: float(r["seconds"]), 1.0, "training time (s)"),
}
_COLUMNS = (
    Column("test perplexity", "perplexity", 4),
    Column("test NLL (nats/char)", "nll", 4),
    Column("top-1 (%)", "top1", 2),
    Column("ECE (%)", "ece", 2),
    Column("fitted T", "T", 4),
    Column("ECE after T (%)", "ece_T", 2),
    Column("NLL after T", "nll_T", 4),
    Column("test smoothed loss", "loss_smoothed", 4),
)


def _trained(cfg: Mapping[str, Any], sizes: Mapping[str, Any]) -> str:
    return (
        f"{count(cfg['epochs'], 'epoch')} of {sizes['train_sequences']} sequences "
        f"({sizes['train_tokens']:,} tokens), batch {cfg['batch_size']}, SGD lr {cfg['lr']:g}; "
        f"test {sizes['test_tokens']:,} tokens of held-out plays."
    )


_table_header = make_table_header(lambda dataset, regime: "Shakespeare (character level)", _trained)


def _transformer_name(config: Mapping[str, Any]) -> str:
    o = {**{opt.key: opt.default for opt in _OPTIONS}, **config.get("options", {})}
    return (
        f"Transformer {o['n_layers']} layers × {o['d_model']} wide, {o['n_heads']} heads, "
        f"context {o['seq_len']}"
    )


def _check(config: TrainConfig) -> None:
    d_model, heads = SPEC.option(config, "d_model"), SPEC.option(config, "n_heads")
    if d_model % heads:
        raise ValueError(
            f"n_heads must divide d_model, got n_heads={heads}, which does not divide "
            f"d_model={d_model}"
        )


_POSITIVE = FieldRule(
    "an integer >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1
)


_OPTIONS = (
    TaskOption("seq_len", "--seq-len", int, _POSITIVE, 128,
               "context length in characters", "L"),
    TaskOption("d_model", "--d-model", int, _POSITIVE, 128,
               "Transformer width", "D"),
    TaskOption("n_layers", "--layers", int, _POSITIVE, 2,
               "Transformer blocks", "N"),
    TaskOption("n_heads", "--heads", int, _POSITIVE, 4,
               "attention heads (dividing --d-model)", "H"),
)  # fmt: skip

#: The declaration of ``task="lm"``.
SPEC = register_task(
    TaskSpec(
        name="lm",
        help="character-level language model on --dataset shakespeare",
        models=(ModelSpec("transformer", (), {}, _transformer_name),),
        datasets=TEXT_DATASETS,
        accepts=lambda dataset: dataset in TEXT_DATASETS,
        regimes={"default": LM_TRAIN},
        load_data=lambda config, log=print: prepare_text(config, log=log),
        make_task=lambda config, data: LanguageModel(config, data),
        summarize_run=_summarize_run,
        metrics=_METRICS,
        columns=_COLUMNS,
        table_header=_table_header,
        grid=Grid("shakespeare", (0.0, 0.1), ("uniform",), (0, 1)),
        options=_OPTIONS,
        check=_check,
        data_fields=("data_dir", "train_size", "test_size", "val_size", "data_seed", "options"),
        display_name=lambda dataset: "Shakespeare",
    )
)
