"""The Orthanc peer that transcodes every incoming instance to JPEG 2000 lossless: its timed ingest."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import loadgen
from loadgen import Request
from peers_systems import J2K_LOSSLESS, Orthanc


class _Crashed(Exception):
    pass


def orthanc_transcoding_ingest(
    work: Path, uploads: Sequence[Request], study: str, timeout: float, starts: int = 3
) -> dict[str, Any]:
    """The same uploads into a fresh Orthanc that transcodes every instance to JPEG 2000 lossless on ingest.

    One untimed upload first (then deleted), then 1 and 4 clients (the study deleted in between), like
    the plain Orthanc. Orthanc 1.10.1 with the GDCM plugin 1.5 dies now and then doing this (SIGSEGV in
    libgdcmMSFF on an HTTP thread): each such death is recorded in ``crashes`` and the whole sequence
    runs again on a fresh Orthanc, up to ``starts`` times. Never raises: a refusal, failed uploads or
    instances stored without transcoding become the result (``error``), and so do ``starts`` crashes.
    """
    out: dict[str, Any] = {"transfer_syntax": J2K_LOSSLESS, "crashes": [], "starts": 0}
    for start in range(1, starts + 1):
        out["starts"] = start
        orthanc = Orthanc(work / f"start{start}", transcode=J2K_LOSSLESS)
        try:
            orthanc.start()
            out["versions"] = orthanc.version()
            mine = [
                Request("POST", f"{orthanc.endpoint}/instances", dict(r.headers), r.body) for r in uploads
            ]
            runs = _timed_transcoding(orthanc, mine, study, timeout)
        except _Crashed as crash:
            out["crashes"].append(f"start {start}, {crash}")
            continue
        except Exception as exc:  # a refusal to start, failed uploads: that is the peer's result
            out["error"] = f"{type(exc).__name__}: {exc}"[:1500]
            return out
        finally:
            orthanc.stop()
        out.update(runs)
        out["instances_per_s"] = max(runs["c1"]["instances_per_s"], runs["c4"]["instances_per_s"])
        return out
    out["error"] = f"Orthanc crashed in all {starts} starts; last: {out['crashes'][-1]}"
    return out


def _timed_transcoding(
    orthanc: Orthanc, mine: Sequence[Request], study: str, timeout: float
) -> dict[str, Any]:
    """One untimed upload, then every upload with 1 and with 4 clients; raises _Crashed if Orthanc dies."""
    warm = asyncio.run(loadgen.run_each(mine[:1], 1, timeout=timeout))
    if not orthanc.alive():
        raise _Crashed(f"untimed first upload: {_exit(orthanc)}")
    if warm.errors:
        raise RuntimeError(f"first upload failed: statuses {dict(warm.statuses)}, {_exit(orthanc)}")
    orthanc.delete_study(study)
    runs: dict[str, Any] = {}
    for conc in (1, 4):
        try:
            up = asyncio.run(loadgen.run_each(mine, conc, timeout=timeout))
        except TimeoutError:
            raise RuntimeError(f"{conc} client(s): not done within {timeout:g} s") from None
        if not orthanc.alive():
            done = up.statuses.get(200, 0)
            raise _Crashed(f"{conc} client(s), after {done} of {len(mine)} uploads: {_exit(orthanc)}")
        syntaxes = orthanc.stored_syntaxes()
        if up.errors or syntaxes.get(J2K_LOSSLESS, 0) != len(mine):
            raise RuntimeError(
                f"{conc} client(s): {up.errors} of {len(mine)} uploads failed (statuses "
                f"{dict(up.statuses)}), stored syntaxes {syntaxes}"
            )
        runs[f"c{conc}"] = {
            "instances_per_s": len(mine) / up.seconds,
            "seconds": up.seconds,
            "p50_ms": up.p50_ms,
            "p99_ms": up.p99_ms,
            "stored_syntaxes": syntaxes,
        }
        if conc == 1:
            orthanc.delete_study(study)
    return runs


def _exit(orthanc: Orthanc) -> str:
    """How a dead Orthanc ended (SIGSEGV, …) and the end of its log."""
    code = orthanc.proc.poll() if orthanc.proc is not None else None
    if code is None:
        return "upload failed, Orthanc still running: " + _tail(orthanc.log, 300)
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    return f"Orthanc {how}; log ends: " + " ".join(_tail(orthanc.log, 300).split())


def _tail(log: Path, chars: int = 800) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
