"""Label-smoothed cross-entropy: time and peak memory of every variant against the built-in.

The benchmark itself lives in the package (``labelsmooth.experiment.bench``) so that the installed
``labelsmooth bench`` command runs it too; this script is the same entry point from a
checkout. By default the results go to a new folder ``./labelsmooth-bench/<UTC date-time>/``
(cpu.md, cpu.json, cpu.png); ``--out benchmarks/results`` regenerates the committed tables
(with the hand-written notes and targets of ``benchmarks/results/cpu-notes.md`` appended).

Run: python benchmarks/bench_cross_entropy.py [--quick] [--shapes 8192x32000 ...] [--out DIR]
"""

import sys

from labelsmooth.experiment.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
