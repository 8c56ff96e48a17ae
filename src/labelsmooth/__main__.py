"""``python -m labelsmooth``: the same as the ``labelsmooth`` command."""

from labelsmooth.experiment.cli import main

raise SystemExit(main())
