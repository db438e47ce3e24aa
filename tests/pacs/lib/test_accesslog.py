"""Gunicorn's access log, through the logger class the served configuration names, keeps no authorization code."""

from __future__ import annotations

import runpy
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from gunicorn.config import Config

REPO = Path(__file__).resolve().parents[3]


def access_line(tmp_path: Path, raw_uri: str, referer: str = "-") -> str:
    served = runpy.run_path(str(REPO / "scripts" / "gunicorn.conf.py"))
    config = Config()
    config.set("accesslog", str(tmp_path / "access.log"))
    config.set("logger_class", served["logger_class"])
    logger = config.logger_class(config)
    path, _, query = raw_uri.partition("?")
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": raw_uri,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_REFERER": referer,
    }
    request = SimpleNamespace(headers=[("REFERER", referer)])
    response = SimpleNamespace(status="302 Found", sent=0, headers=[("Location", "/viewer/")])
    logger.access(response, request, environ, timedelta(milliseconds=3))
    for handler in logger.access_log.handlers:
        handler.flush()
    return (tmp_path / "access.log").read_text()


def test_the_smart_callbacks_code_and_state_never_reach_the_access_log(tmp_path: Path) -> None:
    line = access_line(
        tmp_path,
        "/smart/callback?code=SECRET-CODE-123&state=STATE-456",
        referer="http://127.0.0.1:8000/smart/callback?code=SECRET-CODE-123&state=STATE-456",
    )
    assert "GET /smart/callback?[scrubbed] HTTP/1.1" in line
    assert "SECRET-CODE-123" not in line and "STATE-456" not in line


def test_other_requests_are_logged_as_before(tmp_path: Path) -> None:
    line = access_line(tmp_path, "/dicom-web/studies?limit=10")
    assert "GET /dicom-web/studies?limit=10 HTTP/1.1" in line
