"""Migration throughput from a legacy PACS (Orthanc) into us: instances/s and MB/s, by C-MOVE and by C-GET.

    .venv/bin/python bench/migration.py [N]      (N synthetic 512x512 CT instances, default 500)

Starts, on free loopback ports, Orthanc (Debian's ``orthanc``: the legacy PACS,
knowing our node as the C-MOVE destination ``PACS``) and our DICOM node as in
production (``manage.py dicom_listener``, SQLite, fsync on, every C-STORE
audited), loads Orthanc over REST, then times ``manage.py import_legacy``
from start to exit (inventory, retrieval, reconciliation with every stored
object read back and hashed). Each method runs against a fresh data folder.
MB/s counts the Part 10 bytes Orthanc holds. For reference it also times
Orthanc sending the same study to our node on its own (a REST-triggered
C-MOVE, no inventory, no reconciliation): the floor a migration pays for.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def orthanc(work: Path, our_port: int) -> tuple[subprocess.Popen[bytes], str, int]:
    http, dicom = free_port(), free_port()
    (work / "orthanc").mkdir()
    config = {
        "Name": "Legacy", "StorageDirectory": str(work / "orthanc"), "IndexDirectory": str(work / "orthanc"),
        "StorageCompression": False, "HttpPort": http, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomServerEnabled": True, "DicomAet": "LEGACY", "DicomPort": dicom, "DicomCheckCalledAet": False,
        "DicomAlwaysAllowFind": True, "DicomAlwaysAllowMove": True, "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowStore": True, "DicomModalities": {"PACS": ["PACS", "127.0.0.1", our_port]},
        "SaveJobs": False, "StorageAccessOnFind": "Always", "WebDavEnabled": False, "TcpNoDelay": True,
        "HttpCompressionEnabled": False, "Plugins": [],
    }  # fmt: skip
    (work / "orthanc.json").write_text(json.dumps(config))
    log = (work / "orthanc.log").open("wb")
    process = subprocess.Popen(["/usr/sbin/Orthanc", str(work / "orthanc.json")], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{http}"
    for _ in range(200):
        try:
            requests.get(f"{url}/system", timeout=1).raise_for_status()
            return process, url, dicom
        except requests.RequestException:
            time.sleep(0.05)
    raise SystemExit("Orthanc did not start")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    work = Path(tempfile.mkdtemp(prefix="pacs-migration-bench."))
    base_env = {
        **os.environ,
        "SECRET_KEY": "bench-only",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "pacs.settings",
    }
    our_port = free_port()
    legacy, url, legacy_port = orthanc(work, our_port)
    processes: list[subprocess.Popen[bytes]] = [legacy]
    try:
        sys.path.insert(0, str(ROOT))
        from archive.dicom.synthetic import StudySpec, make_series

        total = 0
        per_study = 100
        for first in range(0, count, per_study):
            spec = StudySpec(patient_id=f"BENCH-{first}", study_date="20240110")
            for part in make_series(spec, "CT", count=min(per_study, count - first), size=512):
                requests.post(f"{url}/instances", data=part, timeout=60).raise_for_status()
                total += len(part)
        print(f"Orthanc holds {count} instances, {total / 1e6:.1f} MB (512x512 CT, {count // per_study} studies)")
        for method in ("move", "get", "orthanc-push"):
            data = work / f"data-{method}"
            env = {**base_env, "PACS_DATA_DIR": str(data)}

            def run(*args: str, env: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [PY, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
                )

            run("migrate", "-v0")
            run("shell", "-v0", "-c", "from archive.models import Site; Site.objects.create(code='old', name='Old')")
            run("dicom_device", "add", "--ae", "LEGACY", "--host", "127.0.0.1", "--site", "old", "--store")
            listener = subprocess.Popen(
                [PY, "manage.py", "dicom_listener", "--host", "127.0.0.1", "--port", str(our_port)],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            processes.append(listener)
            wait_port(our_port)
            started = time.perf_counter()
            if method == "orthanc-push":
                studies = requests.get(f"{url}/studies", timeout=30).json()
                body = {"Resources": studies, "Synchronous": True}
                requests.post(f"{url}/modalities/PACS/store", json=body, timeout=3600).raise_for_status()
                label = "Orthanc C-STORE push (no inventory, no reconciliation)"
            else:
                result = run(
                    "import_legacy", "--aet", "LEGACY", "--host", "127.0.0.1", "--port", str(legacy_port),
                    "--from", "2024-01-10", "--to", "2024-01-10", "--method", method,
                )  # fmt: skip
                assert f"instances identical: {count}" in result.stdout, result.stdout + result.stderr
                label = f"import_legacy --method {method} (inventory, retrieval, reconciliation)"
                if os.environ.get("BENCH_VERBOSE"):
                    print(result.stdout)
            seconds = time.perf_counter() - started
            print(f"{label}: {seconds:.2f} s, {count / seconds:.1f} instances/s, {total / seconds / 1e6:.1f} MB/s")
            listener.terminate()
            listener.wait(timeout=30)
            processes.remove(listener)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
