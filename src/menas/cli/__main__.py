"""`python -m menas.cli`: the `menas` command."""

from menas.cli.main import main

raise SystemExit(main())
