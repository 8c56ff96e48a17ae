"""Label-smoothed cross-entropy: time and peak memory of every variant against the built-in.

The benchmark itself lives in the package (``labelsmooth.benchmark``) so that the installed
``labelsmooth bench`` command runs it too; this script is the same entry point from a
checkout. Results go to benchmarks/results/cpu.{md,json,png}.

Run: python benchmarks/bench_cross_entropy.py [--quick] [--shapes 8192x32000 ...]
"""

import sys

from labelsmooth.benchmark import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
