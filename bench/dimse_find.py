"""C-FIND through a real server's DICOM port over N synthetic studies: p50/p99 per query with a pynetdicom SCU.

Usage: .venv/bin/python bench/dimse_find.py [--studies 100000] [--repeat 300] [--through-port 1000]

The index is filled as bench/qido_index.py fills it (its functions: the first ``--through-port`` studies
through the write path, the rest in bulk; SQLite), in the data dir of an ``openhi serve --dicom-port``
started on it, with the datastore named ``BENCH`` (the called AE title). One association (TCP_NODELAY), then each
query timed from the C-FIND-RQ to the final response (every match received and decoded); the goal is
STUDY level by PatientID at p99 <= 20 ms with 100,000 studies. Also timed: a whole association
(associate, C-FIND, release) and dcmtk's ``findscu`` process (when installed; mostly its start-up).
Prints a table and writes bench/results/dimse-find-<stamp>.json.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import table, write_result
from loadgen import percentile
from pydicom.dataset import Dataset
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND
from qido_index import DS, fill_bulk_sqlite, fill_through_port, study_values

from openhi.core.records import Datastore
from openhi.dimse.ae import scu_ae
from openhi.testing import RunningServer
from openhi.testing.server import free_port

CALLED = "BENCH"
GOAL_P99_MS = 20.0


def identifier(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def queries(n: int) -> dict[str, Callable[[random.Random], Dataset]]:
    study_keys = {"StudyInstanceUID": "", "StudyDate": "", "PatientName": "", "AccessionNumber": ""}
    study_keys |= {"ModalitiesInStudy": "", "NumberOfStudyRelatedInstances": ""}

    def week(r: random.Random) -> Dataset:
        low = study_values(r.randrange(n), n)["study_date"]
        high = f"{low[:6]}{min(28, int(low[6:]) + 6):02d}"
        return identifier("STUDY", **{**study_keys, "StudyDate": f"{low}-{high}"})

    return {
        "STUDY PatientID=": lambda r: identifier(
            "STUDY", **{**study_keys, "PatientID": f"P{r.randrange(n // 2)}"}
        ),
        "STUDY AccessionNumber=": lambda r: identifier(
            "STUDY", **{**study_keys, "AccessionNumber": f"A{r.randrange(n)}"}
        ),
        "STUDY StudyDate=week": week,
        "SERIES of a study": lambda r: identifier(
            "SERIES", StudyInstanceUID=f"1.2.826.0.1.{r.randrange(n)}", SeriesInstanceUID="", Modality=""
        ),
        "IMAGE of a series": lambda r: identifier(
            "IMAGE",
            StudyInstanceUID=(u := f"1.2.826.0.1.{r.randrange(n)}"),
            SeriesInstanceUID=f"{u}.1",
            SOPInstanceUID="",
            InstanceNumber="",
        ),
    }


def find(assoc: Any, ident: Dataset) -> int:
    """Matches of one C-FIND. Raises RuntimeError unless it ends with 0x0000."""
    found = 0
    for status, answer in assoc.send_c_find(ident, FIND):
        if status.Status == 0xFF00:
            found += 1 if answer is not None else 0
        elif status.Status != 0x0000:
            raise RuntimeError(f"C-FIND status 0x{int(status.Status):04X}")
    return found


def measure(port: int, n: int, repeat: int) -> list[dict[str, Any]]:
    ae = scu_ae("BENCHSCU")  # TCP_NODELAY, as a modality should: with Nagle on, the dataset PDU that
    ae.add_requested_context(FIND)  # follows the command PDU waits for the server's delayed ACK (~40 ms)
    rows = []
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED)
    if not assoc.is_established:
        raise RuntimeError("the association was refused")
    try:
        for name, build in queries(n).items():
            rng = random.Random(7)
            for _ in range(min(20, repeat)):
                find(assoc, build(rng))
            times, found = [], []
            for _ in range(repeat):
                ident = build(rng)
                start = time.perf_counter()
                found.append(find(assoc, ident))
                times.append((time.perf_counter() - start) * 1000)
            rows.append(_row(name, times, found))
    finally:
        assoc.release()
    rng = random.Random(11)
    times, found = [], []
    for _ in range(min(repeat, 100)):
        ident = queries(n)["STUDY PatientID="](rng)
        start = time.perf_counter()
        assoc = ae.associate("127.0.0.1", port, ae_title=CALLED)
        found.append(find(assoc, ident))
        assoc.release()
        times.append((time.perf_counter() - start) * 1000)
    rows.append(_row("association + STUDY PatientID= + release", times, found))
    if shutil.which("findscu"):
        times = []
        for _ in range(min(repeat, 30)):
            args = ["findscu", "-S", "-aec", CALLED, "-k", "QueryRetrieveLevel=STUDY"]
            args += ["-k", f"PatientID=P{rng.randrange(n // 2)}", "-k", "StudyInstanceUID"]
            start = time.perf_counter()
            subprocess.run([*args, "127.0.0.1", str(port)], check=True, capture_output=True, timeout=60)
            times.append((time.perf_counter() - start) * 1000)
        rows.append(_row("findscu process, STUDY PatientID=", times, [0]))
    return rows


def _row(name: str, times: list[float], found: list[int]) -> dict[str, Any]:
    return {
        "query": name,
        "matches (mean)": round(statistics.fmean(found), 1),
        "p50 ms": percentile(times, 50),
        "p99 ms": percentile(times, 99),
        "max ms": max(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--through-port", type=int, default=1000)
    args = parser.parse_args()
    n, through = args.studies, min(args.through_port, args.studies)
    from openhi.storage.sqlite.index import SqliteIndex

    with tempfile.TemporaryDirectory(prefix="dimse-find-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        index: Any = SqliteIndex(str(data / "index.sqlite3"))
        try:
            now = time.time()
            index.insert_datastore(Datastore(DS, CALLED, "ACTIVE", "HTJ2K", now, now))
            start = time.perf_counter()
            fill_through_port(index, through, n)
            fill_bulk_sqlite(index, through, n)
            fill_s = time.perf_counter() - start
        finally:
            index.close()
        port = free_port()
        server = RunningServer(data, extra_args=["--dicom-port", str(port)])
        server.start(timeout=120)
        try:
            print(f"{n} studies filled in {fill_s:.1f} s; openhi DICOM port {port}")
            rows = measure(port, n, args.repeat)
        finally:
            server.stop()
    print(table(rows))
    p99 = next(r["p99 ms"] for r in rows if r["query"] == "STUDY PatientID=")
    verdict = "met" if p99 <= GOAL_P99_MS else "NOT met"
    print(f"goal: STUDY PatientID= p99 <= {GOAL_P99_MS} ms with 100,000 studies: {p99:.2f} ms ({verdict})")
    path = write_result(
        "dimse-find",
        {
            "studies": n,
            "through_port": through,
            "fill_seconds": fill_s,
            "repeat": args.repeat,
            "goal_p99_ms": GOAL_P99_MS,
            "queries": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
