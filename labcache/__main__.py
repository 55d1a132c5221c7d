"""``python -m labcache``: the same as the ``labcache`` command."""

from labcache.cli import main

raise SystemExit(main())
