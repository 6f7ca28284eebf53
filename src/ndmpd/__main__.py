"""`python -m ndmpd`: the same as the `ndmpd` command."""

from ndmpd.cli import main

raise SystemExit(main())
