"""Data-parallel training: ``torchrun --nproc-per-node 2 -m labelsmooth train`` equals one process.

The end-to-end test starts ``python -m torch.distributed.run --nproc-per-node 2 -m labelsmooth
train …`` twice (gloo on CPU: two epochs, then ``--resume`` for the third) on a tiny IDX
dataset whose last batch is ragged and odd (121 = 3·32 + 25: shards of 13 and 12), and
compares every epoch's loss and test metrics and the final weights with the same command run
in one process. A ``sitecustomize`` on the ranks' ``PYTHONPATH`` records every ``os.replace``
(the atomic write behind every checkpoint and result file) per rank, to show that only rank 0
wrote. The helpers (batch split, batch-norm conversion, argument checks) are tested without
processes.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from labelsmooth.experiment import cli
from labelsmooth.experiment.train import load_checkpoint
from labelsmooth.experiment.train.distributed import (
    DataParallel,
    check_batch_size,
    global_batchnorm,
    local_batchnorm,
    split_batch,
    world_size_from_env,
)

# --------------------------------------------------------------------------- helpers, no processes


def test_split_batch_is_contiguous_and_covers_the_batch() -> None:
    x, y = torch.arange(25 * 3).reshape(25, 3), torch.arange(25)
    parts = [split_batch((x, y), r, 2) for r in range(2)]
    assert [len(p[1]) for p in parts] == [12, 13]  # rows [0, 12) and [12, 25)
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert torch.equal(torch.cat([p[1] for p in parts]), y)
    nested = split_batch({"tokens": x, "extra": [y]}, 1, 3)
    assert torch.equal(nested["tokens"], x[8:16]) and torch.equal(nested["extra"][0], y[8:16])
    assert torch.equal(split_batch(x, 0, 1), x)


def test_split_batch_refusals() -> None:
    with pytest.raises(ValueError, match="batch of 1 example.*2 processes"):
        split_batch((torch.zeros(1, 2), torch.zeros(1)), 0, 2)
    with pytest.raises(TypeError, match="shard_batch"):
        split_batch((torch.zeros(4, 2), torch.zeros(3)), 0, 2)  # leading sizes differ
    with pytest.raises(TypeError, match="shard_batch"):
        split_batch((torch.zeros(4, 2), 7), 0, 2)  # not a tensor


def test_batch_size_and_world_size_checks() -> None:
    check_batch_size(32, 2)
    with pytest.raises(ValueError, match=r"^batch_size=33 is not divisible by the 2 processes"):
        check_batch_size(33, 2)
    assert world_size_from_env({}) == 1 and world_size_from_env({"WORLD_SIZE": "4"}) == 4
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer >= 1, got WORLD_SIZE='x'"):
        world_size_from_env({"WORLD_SIZE": "x"})


def test_one_process_uses_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert DataParallel.from_env(33) is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert DataParallel.from_env(33) is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not"):
        DataParallel.from_env(32)


class _Rows:
    """A task stand-in: ``n`` rows in batches of ``b`` (only what check_batches calls)."""

    def __init__(self, n: int, b: int) -> None:
        self.x, self.b = torch.arange(n), b

    def num_batches(self) -> int:
        return -(-len(self.x) // self.b)

    def train_batches(self, generator, start, resume_state):  # noqa: ANN001, ANN201
        order = self.x[torch.randperm(len(self.x), generator=generator)]
        return (order[s : s + self.b] for s in range(start * self.b, len(order), self.b))


def test_a_last_batch_the_ranks_cannot_share_is_refused_before_training() -> None:
    parallel = DataParallel(rank=1, local_rank=1, world_size=2, owns_group=False)
    parallel.check_batches(_Rows(10, 4), seed=0)  # last batch 2: one row each
    with pytest.raises(ValueError, match="a batch of 1 example"):
        parallel.check_batches(_Rows(9, 4), seed=0)


def test_global_batchnorm_keeps_state_and_is_plain_without_a_group() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.BatchNorm1d(48))
    plain = [type(m) for m in model.modules()]
    ref = copy.deepcopy(model)
    global_batchnorm(model)
    assert type(model[1]).__name__ == "GlobalBatchNorm2d" and isinstance(model[1], nn.BatchNorm2d)
    assert list(model.state_dict()) == list(ref.state_dict())
    x = torch.randn(5, 2, 6, 6)
    assert torch.equal(model(x), ref(x))  # training mode, no process group: plain batch norm
    model.eval(), ref.eval()
    assert torch.equal(model(x), ref(x))
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values())
    )
    local_batchnorm(model)
    assert [type(m) for m in model.modules()] == plain


@pytest.mark.parametrize(
    ("command", "extra", "message"),
    [
        ("train", ["--batch-size", "33"], "argument --batch-size: batch_size=33 is not divisible"),
        ("compare", [], "compare runs in one process, not under torchrun"),
    ],
)
def test_cli_refuses_under_torchrun(
    command: str,
    extra: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main([command, "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"labelsmooth: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- torchrun, end to end

_TRACE = """
import os
_real_replace = os.replace
def _traced_replace(src, dst, *args, **kwargs):
    name = "rank" + os.environ.get("RANK", "-") + ".txt"
    with open(os.path.join(os.environ["LABELSMOOTH_TEST_TRACE"], name), "a") as f:
        f.write(os.path.basename(os.fspath(dst)) + "\\n")
    return _real_replace(src, dst, *args, **kwargs)
os.replace = _traced_replace
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(args: list[str], cwd: Path, trace: Path) -> subprocess.CompletedProcess[str]:
    """``python -m torch.distributed.run --nproc-per-node 2 -m labelsmooth ARGS``."""
    return _torchrun_script(["-m", "labelsmooth", *args], cwd, trace)


def _torchrun_script(args: list[str], cwd: Path, trace: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", LABELSMOOTH_TEST_TRACE=str(trace))
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(trace), env.get("PYTHONPATH")]))
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    cmd += args
    run = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def _args(data: Path) -> list[str]:
    args = [
        "train",
        "--regime",
        "short",
        "--dataset",
        f"idx:{data}",
        "--depth",
        "8",
        "--width",
        "4",
    ]
    args += ["--epochs", "3", "--batch-size", "32", "--train-size", "0", "--val-size", "0"]
    return [*args, "--threads", "1", "--label-smoothing", "0.1", "--quiet"]


def _trace_dir(tmp_path: Path) -> Path:
    trace = tmp_path / "trace"
    trace.mkdir()
    (trace / "sitecustomize.py").write_text(textwrap.dedent(_TRACE))
    return trace


def _assert_same_run(one: Path, two: Path) -> None:
    """Every epoch's loss and test metrics, and the final weights, within float tolerance."""
    a_run = json.loads((one / "result.json").read_text())
    b_run = json.loads((two / "result.json").read_text())
    assert b_run["completed"] and len(b_run["history"]) == len(a_run["history"]) == 3
    for a, b in zip(a_run["history"], b_run["history"]):
        for key in ("loss", "lr", "top1", "top5", "nll", "ece"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["epoch"], key)
    wa = load_checkpoint(one / "checkpoint.pt")["model"]
    wb = load_checkpoint(two / "checkpoint.pt")["model"]
    assert wa.keys() == wb.keys()  # plain batch-norm keys, no "module." prefix
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.fixture
def tiny_idx(tmp_path: Path, synthetic_idx) -> Path:
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    return synthetic_idx(tmp_path / "idx", 121, 50)  # batches 32, 32, 32, 25 (13 + 12)


@pytest.mark.distributed
def test_torchrun_resumes_and_equals_one_process(
    tmp_path: Path, tiny_idx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One torchrun launch (the default suite's budget): epoch 1 in one process, then epochs 2
    and 3 under ``torchrun --nproc-per-node 2 … --resume``, against 3 epochs in one process."""
    args = _args(tiny_idx)
    assert cli.main([*args, "--out", str(tmp_path / "one")]) == 0
    assert cli.main([*args, "--out", str(tmp_path / "two"), "--stop-after-epoch", "1"]) == 0
    capsys.readouterr()
    trace = _trace_dir(tmp_path)
    run = _torchrun([*args, "--out", "two", "--resume"], tmp_path, trace)
    # rank 0 alone wrote (checkpoints after epochs 2 and 3, the result) and printed
    assert sorted(p.name for p in trace.glob("rank*.txt")) == ["rank0.txt"]
    written = (trace / "rank0.txt").read_text().split()
    assert written == ["checkpoint.pt", "checkpoint.pt", "result.json"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint.pt", "result.json"]
    assert run.stdout.count('"completed": true') == 1 and run.stdout.count("resumed from") == 1
    _assert_same_run(tmp_path / "one", tmp_path / "two")


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_stops_and_resumes_under_torchrun(
    tmp_path: Path, tiny_idx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two launches: 2 epochs with --stop-after-epoch, then --resume, both under torchrun."""
    args = _args(tiny_idx)
    assert cli.main([*args, "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    trace = _trace_dir(tmp_path)
    first = _torchrun([*args, "--out", "two", "--stop-after-epoch", "2"], tmp_path, trace)
    assert load_checkpoint(tmp_path / "two" / "checkpoint.pt")["epoch"] == 2
    assert first.stdout.count('"completed": false') == 1
    second = _torchrun([*args, "--out", "two", "--resume"], tmp_path, trace)
    assert second.stdout.count('"completed": true') == 1
    assert sorted(p.name for p in trace.glob("rank*.txt")) == ["rank0.txt"]
    written = (trace / "rank0.txt").read_text().split()  # epochs 1, 2, result; 3, result
    assert written == ["checkpoint.pt"] * 2 + ["result.json", "checkpoint.pt", "result.json"]
    _assert_same_run(tmp_path / "one", tmp_path / "two")


# --------------------------------------------------------------------------- the language model

_LM_SCRIPT = '''
"""The LM task (tiny in-memory corpus) through train(): python THIS OUT STOP RESUME."""
import sys

from labelsmooth.experiment.data.text import corpus_from_plays
from labelsmooth.experiment.train import TrainConfig, train
from labelsmooth.experiment.tasks.lm import LanguageModel, prepare_text

LINE = "To be, or not to be: that is the question.\\n"
PLAYS = {
    "one": (LINE + "\\n" + "Whether 'tis nobler in the mind to suffer\\n\\n") * 6,
    "two": ("The slings and arrows of outrageous fortune,\\n\\n" + LINE) * 5,
    "val": "Or to take arms against a sea of troubles,\\n\\n" * 3,
    "test": "And by opposing end them. To die: to sleep;\\n\\n" + LINE,
}


def run(out, epochs_stop=None, resume=False):
    config = TrainConfig(
        task="lm", dataset="shakespeare", model="transformer",
        options={"d_model": 16, "n_heads": 2, "n_layers": 1, "seq_len": 24},
        batch_size=8, epochs=3, lr=0.05, warmup_epochs=0.0,
        train_size=None, val_size=4, eval_batch_size=16, num_threads=1,
        label_smoothing=0.1, epochs_stop=epochs_stop,
    )
    corpus = corpus_from_plays(PLAYS, ("val",), ("test",))
    task = LanguageModel(config, prepare_text(config, corpus=corpus, log=None))
    return train(config, task=task, out_dir=out, resume=resume, progress=False, log=None)


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]) or None, sys.argv[3] == "resume")
'''


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_language_model_equals_one_process(tmp_path: Path) -> None:
    """The LM task (44 packed sequences of 14-25 characters, batch 8: each rank's shard has
    its own token count, so the loss weighting n_r·W/N matters): epoch 1 in one process,
    epochs 2-3 under torchrun with resume, against 3 epochs in one process."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    script = tmp_path / "lm_run.py"
    script.write_text(_LM_SCRIPT)
    namespace: dict[str, object] = {}
    exec(compile(_LM_SCRIPT, str(script), "exec"), namespace)  # the same code, in process
    run = namespace["run"]
    assert callable(run)
    run(tmp_path / "one")
    run(tmp_path / "two", epochs_stop=1)
    trace = _trace_dir(tmp_path)
    _torchrun_script([str(script), "two", "0", "resume"], tmp_path, trace)
    assert (trace / "rank0.txt").read_text().split() == ["checkpoint.pt"] * 2 + ["result.json"]
    assert sorted(p.name for p in trace.glob("rank*.txt")) == ["rank0.txt"]
    a_run = json.loads((tmp_path / "one" / "result.json").read_text())
    b_run = json.loads((tmp_path / "two" / "result.json").read_text())
    assert b_run["completed"] and len(b_run["history"]) == len(a_run["history"]) == 3
    for a, b in zip(a_run["history"], b_run["history"]):
        for key in ("loss", "nll", "perplexity", "top1", "ece", "temperature"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["epoch"], key)
    wa = load_checkpoint(tmp_path / "one" / "checkpoint.pt")["model"]
    wb = load_checkpoint(tmp_path / "two" / "checkpoint.pt")["model"]
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5, msg=k)


def test_the_single_process_stand_in_has_the_data_parallel_hooks():
    from labelsmooth.experiment.train.distributed import DataParallel, SingleProcess

    hooks = {n for n in vars(DataParallel) if not n.startswith("_")} - {"from_env"}
    assert hooks <= set(dir(SingleProcess)), hooks - set(dir(SingleProcess))
    one = SingleProcess()
    loss = torch.tensor(0.25)
    assert one.reduce_step(loss, 4, False) == (loss, 1.0, 4, False)
    assert one.shard(None, "batch") == "batch" and one.is_writer and one.any(True)
