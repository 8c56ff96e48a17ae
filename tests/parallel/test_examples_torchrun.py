"""The tensor-parallel examples run under torchrun with 2 gloo ranks on CPU and check
themselves against one process (each rank prints its max error)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.distributed
@pytest.mark.slow  # torchrun and two fresh interpreters: 10-35 s each on a 2-core machine
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("example", "args", "shards"),
    [
        ("tensor_parallel.py", ["--tokens", "40"], ("classes [0, 128)", "classes [128, 257)")),
        ("dtensor_tp.py", ["--seq", "8"], ("129 of 257 classes", "128 of 257 classes")),
    ],
)
def test_example_under_torchrun(tmp_path: Path, example: str, args: list, shards: tuple) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        str(EXAMPLES / example), *args, "--vocab", "257",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    # the two ranks share one stdout: a line of one can land inside the other's, so the
    # reports are found by their pattern, not by line
    errors = re.findall(r"rank \d/2: .*?max error (\d\.\de[+-]\d+)", proc.stdout)
    assert len(errors) == 2, proc.stdout
    assert all(float(e) < 1e-5 for e in errors), proc.stdout
    assert all(shard in proc.stdout for shard in shards), proc.stdout
