"""DICOMweb qido routes (placeholder until built)."""

from __future__ import annotations

from openhi.auth.routes import Route

ROUTES: list[Route] = []
