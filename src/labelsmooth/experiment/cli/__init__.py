"""The ``labelsmooth`` command: ``data fetch``, ``train``, ``compare``, ``distill`` and ``bench``.

Thin by design: it parses arguments and calls :mod:`labelsmooth.experiment.data`,
:mod:`labelsmooth.experiment.train` and (lazily) ``labelsmooth.experiment.bench``. One module
per subcommand; the per-run options of every subcommand that trains come from one table of
rules (:mod:`.rules`: ``--task``, ``--regime``, the model's own options and defaults), so
``train``, ``compare`` and ``distill`` accept and refuse the same things in the same words.

Every argument is checked before any work (no data loaded, no folder created): numbers by
argparse ``type=`` functions built from :data:`labelsmooth.experiment.config.FIELD_RULES` (the
rules :class:`~labelsmooth.experiment.config.TrainConfig` enforces), every value of a list
option, the dataset specification, what fits the task and model, and the output folder's
writability. A refused command prints one ``labelsmooth: error: … (see `labelsmooth <command>
--help`)`` line and exits with status 2.

Exit status: 0 success, 1 a data or checkpoint error while running, 2 bad arguments,
130 interrupted (Ctrl-C; the checkpoint is saved).

Examples::

    labelsmooth data fetch fashion-mnist
    labelsmooth train --regime fitted --label-smoothing 0.1 --seed 0   # one run of compare's
    labelsmooth train --regime short --dataset idx:/data/my-mnist --out runs/a --resume
    labelsmooth train --task lm --epochs 1 --test-size 200
    labelsmooth compare                       # the default grid (fitted regime, 9 runs)
    labelsmooth compare --regime short        # the 5-epoch ResNet instead
    labelsmooth compare --full                # the committed reproduction (both regimes,
                                              # then distillation)
    labelsmooth distill                       # teachers eps 0 / 0.1, students over T
    labelsmooth bench --help                  # forwarded to labelsmooth.experiment.bench
"""

from labelsmooth.experiment.cli.main import EXIT_INTERRUPTED, build_parser, main

__all__ = ["main", "build_parser", "EXIT_INTERRUPTED"]
