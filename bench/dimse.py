#!/usr/bin/env python3
"""The DICOM node side by side with Orthanc, in one run: C-STORE, C-FIND, C-MOVE, C-GET.

What a hospital's modalities and workstations do to a PACS, timed from the
client's side with the tools they would use (DCMTK from Debian) against our
node (``manage.py dicom_listener``, fresh data folder, the embedded default:
SQLite, local files, ``PACS_FSYNC`` on as ``make run`` has it) and a
reference Orthanc (Debian's package, started by ``../shared/bench/orthanc.sh``):

- **C-STORE** of ``--count`` synthetic 512×512 CT instances (``--size``) by
  ``storescu``, over one association, and over four associations in parallel
  (a second, different set of instances);
- **C-FIND** at STUDY level: the median and 90th percentile of ``--queries``
  queries by Patient ID over one pynetdicom association (no process start
  counted);
- **C-MOVE** of one ``--series``-image series to a DCMTK ``storescp``, by
  ``movescu``, the median of ``--repeat`` runs (process start included, the
  same for both);
- **C-GET** of the same series by ``getscu``, the median of ``--repeat`` runs.

Each line prints ours, Orthanc's and the ratio (> 1: we are faster).
Absolute times drift on a shared machine; the ratio, measured in the same run,
is the figure to compare. Run from the checkout::

    .venv/bin/python bench/dimse.py [--count 2000] [--series 50] [--queries 200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archive.dicom.synthetic import StudySpec, make_series  # noqa: E402

SHARED = Path(os.environ.get("SHARED_BENCH", ROOT.parent / "shared" / "bench"))
PY = str(ROOT / ".venv" / "bin" / "python")
ORTHANC_HTTP, ORTHANC_DICOM = 8042, 4242
SCU, DEST = "BENCH", "STORESCP"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_studies(folder: Path, count: int, per_study: int, size: int, tag: str) -> list[str]:
    """``count`` instances in studies of ``per_study`` one-series images; returns the study UIDs."""
    folder.mkdir(parents=True)
    uids: list[str] = []
    n = 0
    while n < count:
        spec = StudySpec(patient_id=f"{tag}-{len(uids):04d}", accession=f"{tag}{len(uids):05d}")
        uids.append(spec.study_uid)
        for part in make_series(spec, "CT", count=min(per_study, count - n), size=size):
            (folder / f"{n:05d}.dcm").write_bytes(part)
            n += 1
    return uids


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port} after {timeout:.0f} s")


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {(done.stderr or done.stdout)[-400:]}")
    return elapsed


def orthanc_put(path: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{ORTHANC_HTTP}{path}", data=json.dumps(body).encode(), method="PUT"
    )
    urllib.request.urlopen(request, timeout=10).read()


class Node:
    """Our DICOM node on a fresh data folder, with the benchmark's devices registered."""

    def __init__(self, work: Path, dest_port: int) -> None:
        self.port = free_port()
        # Only what this run sets: nothing of a configured host (its database, storage, tiers) may leak in.
        keep = ("PATH", "HOME", "LANG", "TMPDIR")
        self.env = {k: v for k, v in os.environ.items() if k in keep} | {
            "PACS_DATA_DIR": str(work / "ours"),
            "SECRET_KEY": "bench-only",
            "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "pacs.settings",
        }
        manage = [PY, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "-v0"], env=self.env, check=True)
        subprocess.run(
            [
                *manage,
                "shell",
                "-v0",
                "-c",
                "from archive.models import Site; Site.objects.get_or_create(code='bench', name='Bench')",
            ],
            env=self.env,
            check=True,
        )
        device = [*manage, "dicom_device", "add", "--site", "bench", "--host", "127.0.0.1"]
        subprocess.run(
            [*device, "--ae", SCU, "--store", "--query", "--retrieve"], env=self.env, check=True, capture_output=True
        )
        subprocess.run(
            [*device, "--ae", DEST, "--port", str(dest_port), "--move-destination"],
            env=self.env,
            check=True,
            capture_output=True,
        )
        self.log = open(work / "listener.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*manage, "dicom_listener", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def find_latencies(port: int, called: str, patient_ids: list[str], queries: int) -> list[float]:
    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

    def no_delay(event: evt.Event) -> None:
        # As DCMTK's tools and most workstations do: otherwise each query's two
        # PDVs wait on Nagle and the server's delayed ACK (40 ms) on both sides.
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    ae = AE(ae_title=SCU)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=called, evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)])
    if not assoc.is_established:
        raise RuntimeError(f"C-FIND association to {called} refused")
    times: list[float] = []
    try:
        for i in range(queries + 5):
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.PatientID = patient_ids[i % len(patient_ids)]
            for keyword in (
                "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "PatientName",
                "StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedInstances",
            ):  # fmt: skip
                setattr(query, keyword, "")
            started = time.perf_counter()
            matches = 0
            for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                    matches += 1
            if matches != 1:
                raise RuntimeError(f"{called}: {matches} matches for {query.PatientID}, expected 1")
            if i >= 5:  # the first few warm caches on both sides
                times.append(time.perf_counter() - started)
    finally:
        assoc.release()
    return times


def median_of(runs: int, make_cmd: object, clean: Path) -> float:
    times = []
    for _ in range(runs):
        shutil.rmtree(clean, ignore_errors=True)
        clean.mkdir(parents=True)
        times.append(timed(make_cmd()))  # type: ignore[operator]
    return statistics.median(times)


def line(label: str, ours: float, theirs: float, unit: str, higher_is_better: bool) -> str:
    ratio = ours / theirs if higher_is_better else theirs / ours
    return f"| {label} | {ours:,.1f} {unit} | {theirs:,.1f} {unit} | {ratio:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="instances per C-STORE run (default 2000)")
    parser.add_argument("--size", type=int, default=512, help="rows and columns of each image (default 512)")
    parser.add_argument("--series", type=int, default=50, help="images in the moved/retrieved series (default 50)")
    parser.add_argument("--queries", type=int, default=200, help="C-FIND queries timed (default 200)")
    parser.add_argument("--repeat", type=int, default=5, help="C-MOVE and C-GET runs, median (default 5)")
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "movescu", "getscu"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} missing: apt-get install dcmtk")

    work = Path(tempfile.mkdtemp(prefix="pacs-dimse-bench."))
    node = None
    storescp = None
    try:
        print(f"writing 2 x {args.count} instances of {args.size}x{args.size} ...", file=sys.stderr)
        write_studies(work / "one", args.count, args.series, args.size, "ONE")
        four_uids = write_studies(work / "four", args.count, args.series, args.size, "FOUR")
        files = sorted((work / "four").iterdir())
        for k in range(4):
            (work / f"four{k}").mkdir()
            for f in files[k::4]:
                f.rename(work / f"four{k}" / f.name)
        dest_port = free_port()
        node = Node(work, dest_port)
        subprocess.run([str(SHARED / "orthanc.sh"), "start", str(work / "orthanc")], check=True, capture_output=True)
        orthanc_put(f"/modalities/{SCU}", {"AET": SCU, "Host": "127.0.0.1", "Port": free_port()})
        orthanc_put(f"/modalities/{DEST}", {"AET": DEST, "Host": "127.0.0.1", "Port": dest_port})
        peers = {"ours": (node.port, "PACS"), "orthanc": (ORTHANC_DICOM, "ORTHANC")}
        rows: list[str] = []

        def add(row: str) -> None:
            rows.append(row)
            print(row, file=sys.stderr, flush=True)  # as it comes: a failing step still leaves the others

        def store(port: int, called: str, folder: Path) -> list[str]:
            return ["storescu", "-nh", "-aet", SCU, "-aec", called, "+sd", "127.0.0.1", str(port), str(folder)]

        one = {name: timed(store(port, ae, work / "one")) for name, (port, ae) in peers.items()}
        add(
            line(
                f"C-STORE {args.count}, one association",
                args.count / one["ours"],
                args.count / one["orthanc"],
                "inst/s",
                True,
            )
        )
        four: dict[str, float] = {}
        for name, (port, ae) in peers.items():
            started = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(timed, [store(port, ae, work / f"four{k}") for k in range(4)]))
            four[name] = time.perf_counter() - started
        add(
            line(
                f"C-STORE {args.count}, four associations",
                args.count / four["ours"],
                args.count / four["orthanc"],
                "inst/s",
                True,
            )
        )

        patient_ids = [f"FOUR-{i:04d}" for i in range(len(four_uids))]
        finds = {name: find_latencies(port, ae, patient_ids, args.queries) for name, (port, ae) in peers.items()}
        for label, pick in (("median", statistics.median), ("p90", lambda t: statistics.quantiles(t, n=10)[-1])):
            add(
                line(
                    f"C-FIND study level, {label}", pick(finds["ours"]) * 1e3, pick(finds["orthanc"]) * 1e3, "ms", False
                )
            )

        series_study = four_uids[0]
        received = work / "received"
        received.mkdir()
        storescp = subprocess.Popen(
            ["storescp", "-aet", DEST, "-od", str(received), str(dest_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(dest_port)
        key = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={series_study}"]
        moves: dict[str, float] = {}
        gets: dict[str, float] = {}
        for name, (port, ae) in peers.items():
            moves[name] = median_of(
                args.repeat,
                lambda port=port, ae=ae: [
                    "movescu",
                    "-S",
                    "-aet",
                    SCU,
                    "-aec",
                    ae,
                    "-aem",
                    DEST,
                    *key,
                    "127.0.0.1",
                    str(port),
                ],
                received,
            )
            if len(list(received.iterdir())) != args.series:
                raise RuntimeError(
                    f"C-MOVE from {name}: {len(list(received.iterdir()))} files arrived, expected {args.series}"
                )
            got = work / "got"
            gets[name] = median_of(
                args.repeat,
                lambda port=port, ae=ae, got=got: [
                    "getscu",
                    "-S",
                    "-aet",
                    SCU,
                    "-aec",
                    ae,
                    *key,
                    "-od",
                    str(got),
                    "127.0.0.1",
                    str(port),
                ],
                got,
            )
            if len(list(got.iterdir())) != args.series:
                raise RuntimeError(
                    f"C-GET from {name}: {len(list(got.iterdir()))} files arrived, expected {args.series}"
                )
        add(line(f"C-MOVE {args.series} images to storescp", moves["ours"], moves["orthanc"], "s", False))
        add(line(f"C-GET {args.series} images", gets["ours"], gets["orthanc"], "s", False))

        print(
            f"\nDIMSE side by side ({args.count} instances of {args.size}x{args.size}, "
            f"{args.queries} C-FIND, median of {args.repeat} moves/gets)\n"
        )
        print("| | ours | Orthanc | ratio (> 1: ours faster) |")
        print("|---|---|---|---|")
        print("\n".join(rows))
    finally:
        if storescp is not None:
            storescp.terminate()
        if node is not None:
            node.stop()
        subprocess.run([str(SHARED / "orthanc.sh"), "stop", str(work / "orthanc")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
