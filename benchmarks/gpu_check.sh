#!/usr/bin/env bash
# The GPU check of impl="triton", as ONE script for a CUDA machine (no internet needed).
#
#   OUT=/some/folder PYTHONPATH=src bash benchmarks/gpu_check.sh     # from the repository root
#
# Needs python3 with torch (CUDA build), triton, pytest and numpy. Writes everything under
# $OUT: machine.txt, tests-gpu.{txt,xml} (the gpu tests of impl="triton"), gpu.{md,json} (the
# benchmark), tests-gpu-others.{txt,xml} (every other gpu-marked test), tests-cuda.{txt,xml}
# (the interpreter test grid, compiled on the GPU), gpu-linear.{md,json} (the linear-head
# benchmark), compile-cuda.{md,json} (compiled training steps with labelsmooth against
# F.cross_entropy, benchmarks/bench_compile.py), gpu_check.log (all output). Each step has its
# own time limit (about 12 minutes in all) and a failing step does not stop the next.
# Liger-Kernel and Cut Cross-Entropy are timed only if importable, or if their wheels are given
# as WHEELS="a.whl b.whl" (LIGER_WHEEL=path is still read), installed with --no-deps into a
# temporary folder; nothing else is installed.
# STEPS="tests bench others grid linear compile" (the default: all) selects steps; machine.txt
# always.
set -u
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
start=$(date +%s)
step() { echo; echo "== $1 ($(( $(date +%s) - start )) s in)"; }

step "machine"
{
    date -u
    nvidia-smi 2>&1 | head -20
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
    "$PY" -c 'import triton; print("triton", triton.__version__)'
    "$PY" -c 'import pytest, numpy; print("pytest", pytest.__version__, "numpy", numpy.__version__)'
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

STEPS=${STEPS:-tests bench others grid linear compile}
want() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

wheels="${WHEELS:-} ${LIGER_WHEEL:-}"
if [ -n "${wheels// /}" ]; then
    step "optional wheels:$wheels"
    deps=$(mktemp -d)
    for wheel in $wheels; do
        if "$PY" -m pip install -q --no-deps --no-index --target "$deps" "$wheel"; then
            echo "installed $wheel"
        else
            echo "could not install $wheel: it is reported as unavailable"
        fi
    done
    export PYTHONPATH="$PYTHONPATH:$deps"
fi

if want tests; then
step "gpu tests of impl='triton'"
timeout 100 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/ops/triton/test_triton.py \
    --junitxml="$OUT/tests-gpu.xml" > "$OUT/tests-gpu.txt" 2>&1
echo "exit status $? (124: time limit)"
tail -n 40 "$OUT/tests-gpu.txt"
fi

if want bench; then
step "benchmark"
timeout 160 "$PY" benchmarks/gpu_bench.py --out "$OUT" --budget-s 120 --iters 10 \
    --triton-configs 4096:8 8192:8 16384:16
echo "exit status $? (124: time limit)"
fi

if want others; then
step "the other gpu tests"
timeout 50 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests \
    --ignore=tests/ops/triton/test_triton.py --continue-on-collection-errors \
    --junitxml="$OUT/tests-gpu-others.xml" \
    > "$OUT/tests-gpu-others.txt" 2>&1
echo "exit status $? (124: time limit)"
tail -n 40 "$OUT/tests-gpu-others.txt"
fi

if want grid; then
step "the interpreter test grid of impl='triton', compiled on the GPU"
timeout 50 "$PY" -m pytest -q -p no:cacheprovider -m "not gpu" tests/ops/triton/test_triton.py \
    --junitxml="$OUT/tests-cuda.xml" > "$OUT/tests-cuda.txt" 2>&1
echo "exit status $? (124: time limit)"
tail -n 40 "$OUT/tests-cuda.txt"
fi

if want linear; then
step "linear-head benchmark"
timeout 150 "$PY" benchmarks/gpu_linear.py --out "$OUT" --budget-s 110 --iters 5
echo "exit status $? (124: time limit)"
fi

if want compile; then
step "compiled training steps (bench_compile.py --device cuda)"
timeout 240 "$PY" benchmarks/bench_compile.py --device cuda --rounds 10 --mlp-steps 50 \
    --lm-steps 5 --out "$OUT"
echo "exit status $? (124: time limit)"
fi

step "done"
ls -l "$OUT"
