"""The experiment application: the ``labelsmooth`` command line, training recipes and tasks,
datasets, models, reports, plots and the benchmark harness.

It is built only on the library's public API (``import labelsmooth``); the library never
imports it.
"""
