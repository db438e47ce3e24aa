"""Streaming the audit trail to a SIEM: ``audit_forward`` against real UDP and TCP syslog listeners."""

from __future__ import annotations

import io
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from audit import forward as auditforward
from audit.models import AuditEvent, AuditForwardCursor
from audit.trail import record

SD_ID = re.compile(r'\[pacs@32473 id="(\d+)"')


def ids(lines: list[str]) -> list[int]:
    found = [SD_ID.search(line) for line in lines]
    assert all(found), lines
    return [int(match[1]) for match in found if match]


class UdpCollector:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.target = f"udp://127.0.0.1:{self.sock.getsockname()[1]}"

    def drain(self) -> list[str]:
        lines = []
        while True:
            try:
                lines.append(self.sock.recv(65535).decode())
            except TimeoutError:
                return lines


class TcpCollector:
    """Accepts connections and splits the octet-counted frames (RFC 6587) into lines."""

    def __init__(self, port: int = 0) -> None:
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(4)
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.lines: list[str] = []
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        """Read every connection to its end; stop once closed and nothing is pending."""
        while True:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                if not self.running:
                    return
                continue
            self.connections += 1
            buffer = b""
            with conn:
                conn.settimeout(0.2)
                while True:
                    try:
                        chunk = conn.recv(65535)
                    except TimeoutError:
                        if not self.running:
                            break
                        continue
                    if not chunk:
                        break
                    buffer += chunk
                    while b" " in buffer:
                        length, _, rest = buffer.partition(b" ")
                        if len(rest) < int(length):
                            break
                        self.lines.append(rest[: int(length)].decode())
                        buffer = rest[int(length) :]

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        self.server.close()


@pytest.fixture
def udp() -> Iterator[UdpCollector]:
    collector = UdpCollector()
    yield collector
    collector.sock.close()


@pytest.fixture
def trail(db: Any) -> list[AuditEvent]:
    return [record("sign-in", actor="alice"), record("retrieve", actor="alice", patient_id="PAT-1")]


def forward(*args: str) -> str:
    err = io.StringIO()
    call_command("audit_forward", *args, stdout=io.StringIO(), stderr=err)
    return err.getvalue()


def test_it_sends_the_trail_once_and_then_only_what_is_new(trail: list[AuditEvent], udp: UdpCollector) -> None:
    forward("--to", udp.target)
    first = udp.drain()
    started = AuditEvent.objects.get(action="audit-forward")
    assert ids(first) == [trail[0].pk, trail[1].pk, started.pk]
    assert "<110>1 " in first[0] and " sign-in " in first[0]

    newer = record("view", actor="bob", study_instance_uid="1.2.3")
    forward("--to", udp.target)
    second = ids(udp.drain())
    assert second[0] == newer.pk and len(second) == 2  # the new record, then this run's own start record
    assert not set(second) & set(ids(first))
    assert AuditForwardCursor.objects.get(target=udp.target).last_id == AuditEvent.objects.latest("id").pk


def test_the_cursor_moves_per_batch(trail: list[AuditEvent], udp: UdpCollector) -> None:
    with auditforward.SyslogSender(udp.target) as sender:
        assert auditforward.forward_batch(sender, udp.target, batch=1) == 1
    assert ids(udp.drain()) == [trail[0].pk]
    assert AuditForwardCursor.objects.get(target=udp.target).last_id == trail[0].pk


def test_each_target_has_its_own_cursor_and_from_now_skips_history(trail: list[AuditEvent], udp: UdpCollector) -> None:
    other = UdpCollector()
    try:
        forward("--to", other.target, "--from-now")
        assert ids(other.drain()) == [AuditEvent.objects.get(action="audit-forward").pk]
        forward("--to", udp.target)
        assert ids(udp.drain())[:2] == [trail[0].pk, trail[1].pk]
    finally:
        other.sock.close()


def test_following_ships_records_as_they_are_written_over_tcp(trail: list[AuditEvent]) -> None:
    collector = TcpCollector()
    target = f"tcp://127.0.0.1:{collector.port}"
    written: list[AuditEvent] = []
    polls = iter(range(100))

    def stop() -> bool:
        n = next(polls)
        if n in (1, 2):  # written while the forwarder runs
            written.append(record("view", actor="carol", study_instance_uid=f"1.2.{n}"))
        return n >= 3

    try:
        sent = auditforward.follow(target, stop, interval=0.01)
    finally:
        collector.close()
    assert sent == 4
    assert ids(collector.lines) == [trail[0].pk, trail[1].pk, written[0].pk, written[1].pk]
    assert collector.connections == 1


def test_following_waits_for_a_collector_that_is_down_and_catches_up(trail: list[AuditEvent]) -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = f"tcp://127.0.0.1:{port}"
    collectors: list[TcpCollector] = []
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:  # the collector comes back after two refused attempts
            collectors.append(TcpCollector(port))

    rounds = iter(range(100))
    try:
        auditforward.follow(target, lambda: next(rounds) >= 4, interval=0.01, sleep=sleep)
    finally:
        for collector in collectors:
            collector.close()
    assert pauses[:2] == [0.01, 0.02]  # backing off while refused
    assert ids(collectors[0].lines) == [trail[0].pk, trail[1].pk]
    assert AuditForwardCursor.objects.get(target=target).last_id == trail[1].pk


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "no syslog target"),
        (("--to", "http://example.org"), "syslog"),
        (("--to", "udp://h:1", "--batch", "0"), "positive"),
    ],
)
def test_it_refuses_a_missing_or_bad_target(db: Any, settings: Any, args: tuple[str, ...], message: str) -> None:
    settings.PACS_AUDIT_SYSLOG = ""
    with pytest.raises(CommandError, match=message):
        forward(*args)


def test_the_target_comes_from_the_setting(trail: list[AuditEvent], udp: UdpCollector, settings: Any) -> None:
    settings.PACS_AUDIT_SYSLOG = udp.target
    assert "sent to " + udp.target in forward()
    assert ids(udp.drain())[:2] == [trail[0].pk, trail[1].pk]
