"""``python -m sepp.bench``: the comparison's command line (see :mod:`sepp.bench.cli`)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
