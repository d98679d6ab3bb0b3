"""``python -m dtda`` is the ``dtda`` command line."""

from dtda.cli import main

raise SystemExit(main())
