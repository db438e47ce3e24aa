#!/usr/bin/env python3
"""Compare two dicomweb_bench.py results (ours vs a reference) as ratios.

Absolute times drift on shared machines; ratios measured in the same run do
not. Prints every common figure with both medians and ours/reference, then
the issue's targets with PASS/FAIL, optionally as Markdown for docs/.

    python bench/compare.py ours.json orthanc.json [--markdown]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

# figure -> (kind, target): kind "throughput" compares inst/s (higher is better),
# "latency" compares median ms (lower is better).
TARGETS: dict[str, tuple[str, float]] = {
    "stow_single_seq": ("throughput", 2.0),
    "stow_batch25_seq": ("throughput", 2.0),
    "stow_single_par4": ("throughput", 2.0),
    "qido_studies_patientname_wildcard": ("latency", 0.5),
    "qido_studies_date_range": ("latency", 0.5),
    "qido_studies_modalitiesinstudy": ("latency", 0.5),
    "qido_studies_accession_exact": ("latency", 0.5),
    "qido_studies_worklist_page": ("latency", 0.5),
    "wado_series_metadata_viewer50": ("latency", 0.5),
    "wado_series_metadata_typical": ("latency", 0.5),
    "wado_frame_raw": ("latency", 0.5),
    "viewer_first_image_rawframe": ("latency", 0.5),
    "viewer_first_image_rendered": ("latency", 0.5),
}


def median_ms(fig: dict[str, Any]) -> float | None:
    stats = fig.get("stats_ms")
    return stats["median"] if fig.get("status") == "ok" and stats else None


def value(fig: dict[str, Any] | None, kind: str) -> float | None:
    if not fig or fig.get("status") != "ok":
        return None
    if kind == "throughput":
        return fig.get("inst_per_s")
    return median_ms(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ours")
    ap.add_argument("reference")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    with open(args.ours) as fh:
        ours = json.load(fh)
    with open(args.reference) as fh:
        ref = json.load(fh)
    of, rf = ours["figures"], ref["figures"]
    md = args.markdown
    rows: list[list[str]] = []
    for name, fig in of.items():
        kind = "throughput" if "inst_per_s" in fig else "latency"
        mine, theirs = value(fig, kind), value(rf.get(name), kind)
        unit = "inst/s" if kind == "throughput" else "ms"
        ratio = f"{mine / theirs:.2f}" if mine and theirs else "-"
        rows.append(
            [
                name,
                f"{mine:.1f} {unit}" if mine is not None else fig.get("status", "-"),
                f"{theirs:.1f} {unit}" if theirs is not None else (rf.get(name) or {}).get("status", "-"),
                ratio,
            ]
        )
    head = ["figure", "ours", "reference", "ours/ref"]
    if md:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        print(f"{head[0]:42s} {head[1]:>16s} {head[2]:>16s} {head[3]:>9s}")
        for r in rows:
            print(f"{r[0]:42s} {r[1]:>16s} {r[2]:>16s} {r[3]:>9s}")
    print()
    failures = 0
    print("Targets (ours/reference):" if not md else "\n| target | ratio | goal | result |\n|---|---|---|---|")
    for name, (kind, goal) in TARGETS.items():
        mine, theirs = value(of.get(name), kind), value(rf.get(name), kind)
        if mine is None or theirs is None:
            ratio_s, verdict = "-", "n/a"
        else:
            ratio = mine / theirs
            ok = ratio >= goal if kind == "throughput" else ratio <= goal
            ratio_s, verdict = f"{ratio:.2f}", "PASS" if ok else "FAIL"
            failures += 0 if ok else 1
        sign = ">=" if kind == "throughput" else "<="
        if md:
            print(f"| {name} | {ratio_s} | {sign} {goal} | {verdict} |")
        else:
            print(f"  {name:40s} {ratio_s:>6s}  goal {sign} {goal:<4}  {verdict}")
    thumbs = [n for n in of if n.startswith("thumbnail_")]
    supported = [n for n in thumbs if of[n].get("status") == "ok"]
    meds = [m for n in supported if (m := median_ms(of[n])) is not None]
    print(
        f"\nThumbnails: {len(supported)}/{len(thumbs)} supported by ours"
        + (f" (median {statistics.median(meds):.1f} ms)" if meds else "")
        + "; reference: "
        + ", ".join(f"{n}={rf.get(n, {}).get('status', '-')}" for n in thumbs)
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
