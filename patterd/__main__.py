"""`python -m patterd` runs the command line."""

from patterd.cli import main

raise SystemExit(main())
