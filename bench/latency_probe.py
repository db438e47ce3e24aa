#!/usr/bin/env python3
"""Many-repetition latency of the two figures the full benchmark finds tightest.

The side-by-side run repeats each cheap read 20 times, which leaves about
±25 % noise on this shared machine. This probe stores one small study into
each server it is given (our server and Orthanc, say), then alternates the
same requests between them, round after round, so drift hits both equally:
one raw frame and one whole instance, each with the benchmark's own Accept
header, and a QIDO study search by exact AccessionNumber. It prints each server's median and the ratio.

    .venv/bin/python bench/latency_probe.py --rounds 400 \\
        ours=http://127.0.0.1:8765/dicom-web@TOKEN orthanc=http://127.0.0.1:8042/dicom-web

A server given as NAME=URL@TOKEN is sent ``Authorization: Bearer TOKEN``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import uuid
from pathlib import Path

from profile_inprocess import ROOT, load_bench  # the same folder: the shared benchmark, loaded once

FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
DICOM_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FIGURES = ("frame", "instance", "accession")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("servers", nargs="+", help="NAME=URL or NAME=URL@TOKEN")
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--studies", type=int, default=20)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "bench"))
    args = ap.parse_args()
    bench = load_bench(Path(args.shared))

    plan = bench.build_plan(args.studies * 3, args.studies, 1, 3, uuid.uuid4().hex[:8])
    phantoms = bench.make_phantoms(k=4)
    instances = list(bench.iter_instances(plan, phantoms))
    clients = {}
    for spec in args.servers:
        name, _, rest = spec.partition("=")
        url, _, token = rest.partition("@")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        cli = bench.Client(url, headers=headers)
        body, ctype = bench.stow_body(instances)
        r = cli.req("POST", "/studies", accept="application/dicom+json", data=body, ctype=ctype)
        if not r.ok:
            print(f"{name}: STOW failed: {r.why()}", file=sys.stderr)
            return 1
        clients[name] = cli

    study = plan["studies"][0]
    series = study["series"][0]
    instance = f"/studies/{study['uid']}/series/{series['uid']}/instances/{series['instances'][0]}"
    samples: dict[str, dict[str, list[float]]] = {n: {f: [] for f in FIGURES} for n in clients}
    for i in range(args.rounds):
        accession = plan["studies"][i % len(plan["studies"])]["accession"]
        for name, cli in clients.items():
            r = cli.get(instance + "/frames/1", accept=FRAME_ACCEPT)
            assert r.ok, r.why()
            samples[name]["frame"].append(r.secs * 1000)
            r = cli.get(instance, accept=DICOM_ACCEPT)
            assert r.ok, r.why()
            samples[name]["instance"].append(r.secs * 1000)
            r = cli.get("/studies", accept="application/dicom+json", params={"AccessionNumber": accession})
            assert r.ok and len(r.json()) == 1, r.why()
            samples[name]["accession"].append(r.secs * 1000)

    names = list(clients)
    print(f"{'figure':<12}" + "".join(f"{n:>12}" for n in names) + (f"{'ratio':>10}" if len(names) == 2 else ""))
    for fig in FIGURES:
        medians = [statistics.median(samples[n][fig]) for n in names]
        line = f"{fig:<12}" + "".join(f"{m:>10.3f}ms" for m in medians)
        if len(names) == 2:
            line += f"{medians[0] / medians[1]:>10.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
