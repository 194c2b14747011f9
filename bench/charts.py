"""Matplotlib PNG bar charts of a peer-benchmark result (ratios against goals, frames/s, latencies)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

COLORS = {"openhi": "#1f77b4", "orthanc": "#ff7f0e", "nginx": "#2ca02c", "limit": "#7f7f7f"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def goals_chart(result: dict[str, Any], path: Path) -> Path:
    """One bar per goal: measured / goal (or goal / measured for "≤" goals), so 1.0 means just met."""
    plt = _plt()
    names, scores = [], []
    for t in result["targets"]:
        op, goal = t["target"].split()[0], float(t["target"].split()[1])
        value = float(t["measured"])
        score = value / goal if op == ">=" else (goal / value if value else math.inf)
        names.append(t["goal"])
        scores.append(0.0 if math.isnan(score) else min(score, 10.0))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.2))
    colors = ["#2ca02c" if s >= 1.0 else "#d62728" for s in scores]
    ax.barh(names, scores, color=colors)
    ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_xlabel("measured relative to goal (≥ 1 met; capped at 10)")
    ax.invert_yaxis()
    ax.set_title("openhi against its goals")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def frames_chart(result: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    systems = ["orthanc", "openhi", "nginx"]
    conns = sorted(result["frames"]["openhi"], key=int)
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(systems)
    for i, name in enumerate(systems):
        values = [result["frames"][name][c]["requests_per_s"] for c in conns]
        xs = [j + i * width for j in range(len(conns))]
        ax.bar(xs, values, width, label=name, color=COLORS[name])
    ax.set_xticks([j + width for j in range(len(conns))], [f"{c} connections" for c in conns])
    ax.set_ylabel("frames/s")
    ax.set_title("Frame retrieval (same frames, same generator)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_chart(result: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, phase, title in (
        (axes[0], "metadata", "Series metadata"),
        (axes[1], "search", "PatientID search"),
    ):
        conns = sorted(result[phase]["openhi"], key=int)
        labels, p50, p99, colors = [], [], [], []
        for c in conns:
            for name in ("orthanc", "openhi"):
                labels.append(f"{name}\n{c} conn")
                p50.append(result[phase][name][c]["p50_ms"])
                p99.append(result[phase][name][c]["p99_ms"])
                colors.append(COLORS[name])
        xs = list(range(len(labels)))
        ax.bar(xs, p99, color=colors, alpha=0.35, label="p99")
        ax.bar(xs, p50, color=colors, label="p50")
        ax.set_xticks(xs, labels, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("ms (log scale)")
        ax.set_title(f"{title}: p50 (solid), p99 (light)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ingest_chart(result: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    ing = result["ingest"]
    bars = [
        ("Orthanc\n1 client", ing["orthanc_c1"]["instances_per_s"], COLORS["orthanc"]),
        ("Orthanc\n4 clients", ing["orthanc_c4"]["instances_per_s"], COLORS["orthanc"]),
    ]
    j2k = ing.get("orthanc_j2k")
    if j2k is not None:  # 0 when it failed: the bar is missing, the label says so
        failed = "\n(failed)" if "error" in j2k else ""
        bars.append((f"Orthanc J2K\ntranscoding{failed}", j2k.get("instances_per_s", 0.0), COLORS["orthanc"]))
    bars.append(("openhi\nimport job", ing["openhi"]["instances_per_s"], COLORS["openhi"]))
    if "codec_limit_encode_decode_instances_per_s" in ing:
        bars.append(
            (
                "HTJ2K encode +\ndecode (limit)",
                ing["codec_limit_encode_decode_instances_per_s"],
                COLORS["limit"],
            )
        )
    bars.append(("HTJ2K encode\nalone", ing["codec_limit_instances_per_s"], "#bbbbbb"))
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylabel("instances/s (512 × 512 int16)")
    ax.set_title("Ingest")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw(result: dict[str, Any], outdir: Path) -> list[Path]:
    """Write the four charts into ``outdir``; return their paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    return [
        goals_chart(result, outdir / "goals.png"),
        ingest_chart(result, outdir / "ingest.png"),
        frames_chart(result, outdir / "frames.png"),
        latency_chart(result, outdir / "latency.png"),
    ]
