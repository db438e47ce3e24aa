"""Gunicorn settings for ``make run`` and for production behind a TLS proxy.

Threaded workers (gthread): DICOMweb clients such as the viewer open several
parallel, long-lived keep-alive connections, and frame reads spend their time
in I/O. Every value can be changed through the environment.
"""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_WORKERS", max(2, min(4, (os.cpu_count() or 1) + 1))))
threads = int(os.environ.get("WEB_THREADS", "8"))
keepalive = int(os.environ.get("WEB_KEEPALIVE", "15"))
timeout = int(os.environ.get("WEB_TIMEOUT", "300"))  # large STOW uploads
graceful_timeout = 30
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - heartbeat files, as gunicorn advises
accesslog = os.environ.get("WEB_ACCESS_LOG") or None
# The access log never keeps a one-use secret from a URL (the SMART callback's authorization code).
logger_class = "pacs.lib.accesslog.ScrubbingLogger"
errorlog = "-"
loglevel = os.environ.get("WEB_LOG_LEVEL", "info")
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
limit_request_line = 8190
# No runtime control socket unless asked: several servers (tests, demo) share one machine.
control_socket_disable = not os.environ.get("WEB_CONTROL_SOCKET")
if not control_socket_disable:
    control_socket = os.environ["WEB_CONTROL_SOCKET"]
