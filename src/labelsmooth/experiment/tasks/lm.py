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

Progress bars, checkpoints, resume and ``result.json`` come from the loop
(:func:`labelsmooth.experiment.train.train`), as for the image task.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import labelsmooth
from labelsmooth.experiment.data import PAD, TextCorpus, load_shakespeare, pack_sequences, pad_batch
from labelsmooth.experiment.models import TransformerLM
from labelsmooth.experiment.train._files import write_csv, write_json, write_text
from labelsmooth.experiment.train.config import TrainConfig, config_differences
from labelsmooth.experiment.train.trainer import train

__all__ = ["TextSplits", "LanguageModel", "prepare_text", "evaluate_lm", "run_compare_lm"]


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

    def pack(plays: dict[str, str]) -> list[torch.Tensor]:
        return pack_sequences(list(plays.values()), corpus.encode, config.seq_len)

    train, val, test = pack(corpus.train), pack(corpus.val), pack(corpus.test)
    if config.train_size is not None and config.train_size < len(train):
        g = torch.Generator().manual_seed(config.data_seed)
        keep = torch.randperm(len(train), generator=g)[: config.train_size].sort().values
        train = [train[int(i)] for i in keep]
    return TextSplits(corpus, train, val[: config.val_size], test)


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
    from labelsmooth.metrics import CalibrationMeter, fit_temperature

    was_training = model.training
    model.eval()
    temperature = 1.0
    if data.val:
        pairs = list(_token_logits(model, data.val, batch_size))
        val_logits = torch.cat([z for z, _ in pairs])  # (n_val, V)
        val_target = torch.cat([t for _, t in pairs])  # (n_val,)
        temperature = float(fit_temperature(val_logits, val_target))
        del pairs, val_logits
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
    if world_size > 1:
        import torch.distributed as dist

        sums = torch.tensor([smoothed, nll, count], dtype=torch.float64)
        dist.all_reduce(sums)
        smoothed, nll, count = float(sums[0]), float(sums[1]), int(sums[2])
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
class LanguageModel:
    """Character-level language modelling with label-smoothed cross-entropy (:class:`Task`).

    Args:
        config: The run (``task="lm"``: model size, context, batch size, smoothing, ECE bins).
        data: The packed splits (:func:`prepare_text`).
    """

    config: TrainConfig
    data: TextSplits

    @classmethod
    def from_config(
        cls, config: TrainConfig, *, log: Callable[[str], None] | None = print
    ) -> LanguageModel:
        """Load ``config.dataset`` (:func:`prepare_text`) and build the task."""
        return cls(config, prepare_text(config, log=log))

    def __post_init__(self) -> None:
        self._mask = _class_mask(self.data.vocab_size)

    def num_batches(self) -> int:
        return math.ceil(len(self.data.train) / self.config.batch_size)

    def build_model(self) -> nn.Module:
        c = self.config
        return TransformerLM(
            self.data.vocab_size,
            d_model=c.d_model,
            n_layers=c.n_layers,
            n_heads=c.n_heads,
            max_len=c.seq_len,
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


# --------------------------------------------------------------------------- comparison


#: ``labelsmooth compare --task lm``: ε 0 (baseline) and 0.1, uniform convention, seeds 0 and 1.
DEFAULT_LM_EPSILONS = (0.0, 0.1)
DEFAULT_LM_SEEDS = (0, 1)
#: Summary columns: (record key in ``metrics``, scale to the shown unit, header).
_COLUMNS = (
    ("perplexity", 1.0, "test perplexity"),
    ("nll", 1.0, "test NLL (nats/char)"),
    ("top1", 100.0, "top-1 (%)"),
    ("ece", 100.0, "ECE (%)"),
    ("temperature", 1.0, "fitted T"),
    ("ece_T", 100.0, "ECE after T (%)"),
    ("nll_T", 1.0, "NLL after T"),
    ("loss_smoothed", 1.0, "test smoothed loss"),
)


def _run_name(eps: float, convention: str, seed: int) -> str:
    tag = "baseline" if eps == 0 else f"ls{eps:g}-{convention}"
    return f"shakespeare-{tag}-seed{seed}"


def run_compare_lm(
    base: TrainConfig,
    out: str | os.PathLike[str] = "compare-results",
    *,
    epsilons: Sequence[float] = DEFAULT_LM_EPSILONS,
    conventions: Sequence[str] = ("uniform",),
    seeds: Sequence[int] = DEFAULT_LM_SEEDS,
    corpus: TextCorpus | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train the language model with every ε (each ε > 0 with every convention) and seed;
    write ``runs/<run>.json`` (+ a resumable ``runs/<run>/checkpoint.pt``), ``results.csv``,
    ``summary.json`` and ``results.md`` (mean ± std over seeds) to ``out``.

    Args:
        base: Settings of every run (``task="lm"``); ε, convention and seed are replaced.
        out: Results folder.
        epsilons: ε values; 0 is the baseline (run once per seed).
        conventions: Conventions of every ε > 0.
        seeds: Seeds, seed-major order (an interrupted grid has whole seeds done).
        corpus: The corpus (default: the cached Shakespeare corpus, fetched if needed).
        resume: Skip runs whose JSON exists (same run, completed); resume a run's checkpoint.
        progress: tqdm bars (default: when stderr is a terminal).
        log: Where messages go.

    Returns:
        ``{"records", "summary", "table", "seconds"}``.
    """
    say = log or (lambda _msg: None)
    if base.task != "lm":
        raise ValueError(f"run_compare_lm needs a task='lm' config, got task={base.task!r}")
    t0 = time.perf_counter()
    data = prepare_text(base, corpus=corpus, log=say)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = [(0.0, "-") if e == 0 else (float(e), c) for e in epsilons for c in conventions]
    grid = list(dict.fromkeys(grid))
    runs = [(e, c, s) for s in dict.fromkeys(seeds) for e, c in grid]
    n_tokens = sum(int(s.numel()) - 1 for s in data.train)
    say(
        f"== shakespeare: {len(runs)} runs; train {len(data.train)} sequences ({n_tokens} "
        f"tokens), val {len(data.val)}, test {len(data.test)} sequences"
    )
    records = []
    for i, (eps, conv, seed) in enumerate(runs):
        name = _run_name(eps, conv, seed)
        config = dataclasses.replace(
            base, label_smoothing=eps, convention="uniform" if conv == "-" else conv, seed=seed
        )
        path = out_dir / "runs" / f"{name}.json"
        if resume and path.is_file():
            done = json.loads(path.read_text())
            if done.get("completed") and not config_differences(done["config"], config.to_dict()):
                say(f"[{name}] already done, skipped (--resume)")
                records.append(done)
                continue
        run_dir = out_dir / "runs" / name
        say(f"-- run {i + 1}/{len(runs)}: [{name}]")
        result = train(
            config,
            out_dir=run_dir,
            resume=resume and (run_dir / "checkpoint.pt").is_file(),
            task=LanguageModel(config, data),
            progress=progress,
            log=log,
        )
        m = result.metrics
        record = {
            "name": name,
            "dataset": "shakespeare",
            "label_smoothing": eps,
            "convention": conv,
            "seed": seed,
            "config": config.to_dict(),
            "completed": result.completed,
            "history": result.history,
            "metrics": m,
            "temperature": m["temperature"],
            "metrics_after_temperature": {"nll": m["nll_T"], "ece": m["ece_T"]},
            "seconds": result.seconds,
            "num_parameters": sum(p.numel() for p in result.model.parameters()),
            "sizes": {
                "train_sequences": len(data.train),
                "train_tokens": n_tokens,
                "val_sequences": len(data.val),
                "test_sequences": len(data.test),
                "test_tokens": int(m["tokens"]),
            },
        }
        write_json(path, record)
        say(f"[{name}] {LanguageModel(config, data).describe(m)}  ({result.seconds:.0f} s)")
        records.append(record)
    seconds = time.perf_counter() - t0
    summary = _summarize(records)
    table = _table(summary, records, seconds)
    write_csv(out_dir / "results.csv", [_flat(r) for r in records])
    write_json(out_dir / "summary.json", {"rows": summary, "seconds": seconds})
    write_text(out_dir / "results.md", table + "\n")
    say("")
    say(table)
    say(f"results written to {out_dir}  ({seconds / 60:.1f} min)")
    return {"records": records, "summary": summary, "table": table, "seconds": seconds}


def _flat(r: dict[str, Any]) -> dict[str, Any]:
    row = {k: r[k] for k in ("name", "label_smoothing", "convention", "seed", "seconds")}
    row.update({k: r["metrics"][k] for k, _, _ in _COLUMNS})
    return row


def _summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std (ddof 1; 0 for one seed) of every column per (ε, convention)."""
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["label_smoothing"], r["convention"]), []).append(r)
    rows = []
    for (eps, conv), rs in groups.items():
        row: dict[str, Any] = {"label_smoothing": eps, "convention": conv, "seeds": len(rs)}
        for key, scale, _ in (*_COLUMNS, ("seconds", 1.0, "")):
            vals = [scale * float(r["metrics"].get(key, r.get(key))) for r in rs]
            row[key] = statistics.fmean(vals)
            row[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        rows.append(row)
    return rows


def _table(summary: list[dict[str, Any]], records: Sequence[dict[str, Any]], seconds: float) -> str:
    c = TrainConfig(**records[0]["config"])
    head = (
        f"**Shakespeare (character level)**: Transformer {c.n_layers} layers × {c.d_model} "
        f"wide, {c.n_heads} heads, context {c.seq_len}, "
        f"{records[0]['num_parameters']:,} parameters; {c.epochs} epochs of "
        f"{records[0]['sizes']['train_sequences']} sequences "
        f"({records[0]['sizes']['train_tokens']:,} tokens), batch {c.batch_size}, SGD lr "
        f"{c.lr:g}; test {records[0]['sizes']['test_tokens']:,} tokens of held-out plays; "
        f"mean ± std over seeds; {seconds / 60:.1f} min for this invocation."
    )
    cols = ["trick", "seeds", *(h for _, _, h in _COLUMNS), "train s/run"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in summary:
        eps, conv = row["label_smoothing"], row["convention"]
        cells = ["baseline" if eps == 0 else f"LS ε={eps:g} ({conv})", str(row["seeds"])]
        for key, _, _ in _COLUMNS:
            digits = 2 if key in ("top1", "ece", "ece_T") else 4
            std = f" ± {row[key + '_std']:.{digits}f}" if row["seeds"] > 1 else ""
            cells.append(f"{row[key]:.{digits}f}{std}")
        cells.append(f"{row['seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n\n" + "\n".join(lines)
