"""``python -m labelsmooth``: the same as the ``labelsmooth`` command."""

from labelsmooth.cli import main

raise SystemExit(main())
