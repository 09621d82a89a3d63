"""`python -m loadtest`: the same as the `cloudseat-loadtest` console script."""

from __future__ import annotations

import sys

from loadtest.cli import main

sys.exit(main())
