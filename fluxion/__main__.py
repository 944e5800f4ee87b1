"""``python -m fluxion``: the same as the ``fluxion`` command."""

from fluxion.cli import main

raise SystemExit(main())
