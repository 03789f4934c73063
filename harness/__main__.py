"""``python -m harness`` is the ``trialbench`` command."""

from harness.cli import main

raise SystemExit(main())
