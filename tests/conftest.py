"""Shared pytest configuration: make tests/ importable helpers (dicom_factory, seaweed) available."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
