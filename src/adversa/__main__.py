"""`python -m adversa ...` runs the command line."""

from adversa.cli.main import main

raise SystemExit(main())
