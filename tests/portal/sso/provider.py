"""The test OpenID provider (``tests/portal/sso/oidc/provider.js``, on the ``oidc-provider`` npm package) on loopback.

One script serves both kinds of test: the portal's SSO tests register the
portal as a client with accounts that carry roles and sites; the SMART tests
(:mod:`tests.integrations.smart.ehr`) make it the EHR's authorization server
by naming the PACS's resource indicator and the EHR's patients. See the
script's header for what each setting does.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningProvider:
    """A started provider: its issuer URL and its process."""

    url: str
    process: subprocess.Popen[str]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_provider(
    clients: list[dict[str, Any]],
    accounts: dict[str, dict[str, Any]],
    pacs: str = "",
    patients: dict[str, Any] | None = None,
) -> RunningProvider:
    """The provider on a free loopback port with ``clients`` and ``accounts`` (:class:`RuntimeError` if it fails).

    ``pacs`` (the PACS's resource indicator) and ``patients`` make it the SMART tests' EHR.
    """
    node = shutil.which("node")
    if node is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError(
            "The test OpenID provider needs node and `npm --prefix tests/portal/sso/oidc ci` (make test)"
        )
    env = {
        **os.environ,
        "IDP_PORT": str(free_port()),
        "IDP_CLIENTS": json.dumps(clients),
        "IDP_ACCOUNTS": json.dumps(accounts),
        "IDP_PACS": pacs,
        "IDP_PATIENTS": json.dumps(patients or {}),
    }
    process = subprocess.Popen(
        [node, "provider.js"], cwd=PROVIDER_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 20
    line = ""
    while time.monotonic() < deadline and not line.startswith("listening"):
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            raise RuntimeError(f"The test OpenID provider exited: {process.stderr.read() if process.stderr else ''}")
    if not line.startswith("listening"):
        process.terminate()
        process.wait(timeout=10)
        raise RuntimeError(f"The test OpenID provider did not start: {line!r}")
    return RunningProvider(line.split()[1], process)
