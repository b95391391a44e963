"""`python -m lightner`: the `lightner` command."""

from .cli import main

raise SystemExit(main())
