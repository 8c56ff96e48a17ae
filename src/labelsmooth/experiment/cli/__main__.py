"""``python -m labelsmooth.experiment.cli``: the ``labelsmooth`` command."""

from labelsmooth.experiment.cli.main import main

raise SystemExit(main())
