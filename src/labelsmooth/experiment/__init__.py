"""The experiment application: the ``labelsmooth`` command line, training recipes and tasks,
datasets, models, reports, plots and the benchmark harness.

It is built only on the library's public API (``import labelsmooth``); the library never
imports it. Read it in this order:

* :mod:`~labelsmooth.experiment.config`: :class:`~labelsmooth.experiment.config.TrainConfig`,
  what determines a run, and its value rules;
* :mod:`~labelsmooth.experiment.tasks`: what is learned; a registry of tasks (``image``,
  ``lm``), each declaring its models, datasets, regimes, options, data and report columns;
* :mod:`~labelsmooth.experiment.train`: the recipes (one run, data-parallel runs,
  checkpoints, the comparison grid, distillation), reading only the task declarations;
* :mod:`~labelsmooth.experiment.report` (tables), :mod:`~labelsmooth.experiment.files`
  (atomic writes), :mod:`~labelsmooth.experiment.data`, :mod:`~labelsmooth.experiment.models`,
  ``plotting`` and ``bench``;
* :mod:`~labelsmooth.experiment.cli`: the command, one module per subcommand and one table of
  per-run option rules.
"""
