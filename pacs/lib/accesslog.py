"""Gunicorn's access log without the one-use secrets some URLs carry (``logger_class`` in scripts/gunicorn.conf.py).

An OAuth authorization code arrives in the query string of the SMART App
Launch callback (``/smart/callback?code=…&state=…``): it is used once, at
once, but a log line would keep it. :class:`ScrubbingLogger` replaces the
query of those paths (:data:`SECRET_QUERY_PATHS`) with ``[scrubbed]``
wherever an access-log atom holds it: the request line, the query, and any
header such as a Referer that quotes the URL. Every other request is logged
as before.
"""

from __future__ import annotations

import re
from typing import Any

from gunicorn.glogging import Logger

#: Paths whose query strings carry one-use secrets.
SECRET_QUERY_PATHS = ("/smart/callback",)
SCRUBBED = "[scrubbed]"
_QUERY = re.compile("(" + "|".join(re.escape(p) for p in SECRET_QUERY_PATHS) + r")\?[^\s\"]*")


def scrub(text: str) -> str:
    """``text`` with the query of every secret-carrying path replaced."""
    return _QUERY.sub(lambda m: f"{m.group(1)}?{SCRUBBED}", text)


class ScrubbingLogger(Logger):
    """Gunicorn's logger, with :func:`scrub` applied to every access-log atom."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        if environ.get("PATH_INFO") in SECRET_QUERY_PATHS and atoms.get("q"):
            atoms["q"] = SCRUBBED
        return {k: scrub(v) if isinstance(v, str) else v for k, v in atoms.items()}
