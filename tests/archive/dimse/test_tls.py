"""DICOM TLS: DCMTK's echoscu and storescu over TLS, against a CA, server and client certificates made here.

The certificates are made with the openssl command line for each test
session: a CA, the node's certificate (127.0.0.1) and a client certificate
for CT1 signed by it, and a client certificate signed by another CA.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from archive.dicom.synthetic import make_instance
from archive.dimse.listener import DicomListener
from archive.dimse.tls import server_context
from archive.models import DicomDevice, Instance
from audit.models import AuditEvent
from tests.archive.dimse.conftest import JANE, dcmtk, wait_idle

pytestmark = pytest.mark.django_db(transaction=True)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def issue(folder: Path, name: str, subject: str, ca: str, extensions: str = "") -> None:
    """A 2048-bit RSA key ``name.key`` and a certificate ``name.crt`` for ``subject``, signed by ``ca``."""
    openssl(
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-subj",
        subject,
        "-out",
        f"{name}.csr",
        cwd=folder,
    )
    ext = ["-extfile", f"{name}.ext"] if extensions else []
    if extensions:
        (folder / f"{name}.ext").write_text(extensions)
    openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.crt",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        f"{name}.crt",
        *ext,
        cwd=folder,
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "rogue-ca"):
        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{ca}.key",
            "-subj",
            f"/CN=Test {ca}",
            "-days",
            "2",
            "-out",
            f"{ca}.crt",
            cwd=folder,
        )
    issue(folder, "node", "/CN=PACS", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    issue(folder, "ct1", "/CN=CT1", "ca", "extendedKeyUsage=clientAuth\n")
    issue(folder, "rogue", "/CN=CT1", "rogue-ca", "extendedKeyUsage=clientAuth\n")
    return folder


def tls_listener(pki: Path, verify_clients: bool) -> DicomListener:
    context = server_context(
        str(pki / "node.crt"), str(pki / "node.key"), str(pki / "ca.crt") if verify_clients else ""
    )
    node = DicomListener("PACS", host="127.0.0.1", port=0, ssl_context=context, tls_port=0)
    node.start()
    return node


@pytest.fixture
def node(pki: Path, devices: dict[str, DicomDevice]) -> Iterator[DicomListener]:
    """A node that wants client certificates signed by the test CA."""
    scp = tls_listener(pki, verify_clients=True)
    yield scp
    scp.stop()


def client(pki: Path, name: str) -> list[str]:
    """DCMTK options for TLS with ``name``'s key and certificate, trusting the test CA."""
    return ["+tls", str(pki / f"{name}.key"), str(pki / f"{name}.crt"), "+cf", str(pki / "ca.crt")]


def associations(outcome: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="dimse_association", outcome=outcome).order_by("id"))


def refusals() -> list[AuditEvent]:
    """The ``denied`` association records, once the refused connection's thread has written one."""
    deadline = time.monotonic() + 10
    while not associations("denied"):
        assert time.monotonic() < deadline, "no refusal recorded"
        time.sleep(0.02)
    return associations("denied")


def test_echoscu_and_storescu_with_a_client_certificate_the_ca_signed_work_over_tls(
    node: DicomListener, pki: Path, tmp_path: Path
) -> None:
    echo = dcmtk("echoscu", *client(pki, "ct1"), "-aet", "CT1", "-aec", "PACS", "127.0.0.1", str(node.tls_port))
    assert echo.returncode == 0, echo.stderr
    path = tmp_path / "ct.dcm"
    path.write_bytes(make_instance(JANE, "CT", size=16))
    store = dcmtk(
        "storescu", *client(pki, "ct1"), "-aet", "CT1", "-aec", "PACS", "127.0.0.1", str(node.tls_port), str(path)
    )
    assert store.returncode == 0, store.stderr
    wait_idle(node)
    assert Instance.objects.count() == 1
    accepted = associations("success")
    assert len(accepted) == 2
    assert accepted[-1].detail["tls"] in ("TLSv1.2", "TLSv1.3")
    assert accepted[-1].detail["client_certificate"] == "CT1"
    plain = dcmtk("echoscu", "-aet", "CT1", "-aec", "PACS", "127.0.0.1", str(node.port))
    assert plain.returncode == 0, plain.stderr  # the plain port serves on beside the TLS one
    wait_idle(node)
    assert "tls" not in associations("success")[-1].detail


def test_a_plain_tcp_client_on_the_tls_port_fails_cleanly_and_the_node_serves_on(
    node: DicomListener, pki: Path
) -> None:
    plain = dcmtk("echoscu", "-aet", "CT1", "-aec", "PACS", "127.0.0.1", str(node.tls_port))
    assert plain.returncode != 0
    refused = refusals()
    assert len(refused) == 1
    assert refused[0].source_ip == "127.0.0.1"
    assert refused[0].detail["tls"] is True
    assert refused[0].detail["reason"] == "TLS handshake failed: WRONG_VERSION_NUMBER"
    echo = dcmtk("echoscu", *client(pki, "ct1"), "-aet", "CT1", "-aec", "PACS", "127.0.0.1", str(node.tls_port))
    assert echo.returncode == 0, echo.stderr


@pytest.mark.parametrize(
    ("certificate", "reason"),
    [("rogue", "CERTIFICATE_VERIFY_FAILED"), (None, "PEER_DID_NOT_RETURN_A_CERTIFICATE")],
    ids=["signed by another CA", "no client certificate"],
)
def test_a_client_without_a_certificate_the_ca_signed_is_refused(
    node: DicomListener, pki: Path, certificate: str | None, reason: str
) -> None:
    options = client(pki, certificate) if certificate else ["+tla", "+cf", str(pki / "ca.crt")]
    echo = dcmtk("echoscu", *options, "-aet", "CT1", "-aec", "PACS", "127.0.0.1", str(node.tls_port))
    assert echo.returncode != 0
    wait_idle(node)
    assert not associations("success")
    refused = refusals()
    assert len(refused) == 1 and refused[0].detail["reason"] == f"TLS handshake failed: {reason}"


def test_without_a_ca_a_client_may_use_tls_without_a_certificate(pki: Path, devices: dict[str, DicomDevice]) -> None:
    scp = tls_listener(pki, verify_clients=False)
    try:
        echo = dcmtk(
            "echoscu", "+tla", "+cf", str(pki / "ca.crt"), "-aet", "CT1", "-aec", "PACS", "127.0.0.1", str(scp.tls_port)
        )
        wait_idle(scp)
    finally:
        scp.stop()
    assert echo.returncode == 0, echo.stderr
    accepted = associations("success")[-1]
    assert accepted.detail["tls"] in ("TLSv1.2", "TLSv1.3") and "client_certificate" not in accepted.detail


def test_the_listener_refuses_to_start_when_the_certificate_cannot_be_loaded(pki: Path, tmp_path: Path) -> None:
    with override_settings(PACS_DIMSE_TLS_CERT=str(tmp_path / "missing.crt"), PACS_DIMSE_TLS_KEY=str(pki / "node.key")):
        with pytest.raises(CommandError, match="DICOM TLS certificate, key or CA cannot be loaded"):
            call_command("dicom_listener", "--port", "0", "--host", "127.0.0.1")
