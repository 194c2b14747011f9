"""``python -m openhi``: the command-line entry point."""

from __future__ import annotations

import sys

from openhi.cli import main

sys.exit(main())
