"""A progress line for long management commands: done/total, rate and time left, on stderr.

On a terminal the line is redrawn in place; otherwise (a log, CI) a line is
written at most every ``every`` seconds and at the end. No dependency.
"""

from __future__ import annotations

import time
from typing import Protocol

from django.core.management.base import OutputWrapper


class Stream(Protocol):
    """A text stream: a file, or a management command's ``self.stderr`` (Django's OutputWrapper)."""

    def write(self, msg: str, /) -> object: ...

    def isatty(self) -> bool: ...


class Progress:
    """``update(done)`` as work goes, ``finish(done)`` at the end; ``total`` may be set later (or never)."""

    def __init__(self, stream: Stream, total: int | None, label: str, unit: str = "", every: float = 5.0) -> None:
        self.stream, self.total, self.label, self.unit, self.every = stream, total, label, unit, every
        self.started = self.last = time.monotonic()
        self.tty = stream.isatty()

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < (0.2 if self.tty else self.every):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        text = f"{self.label}: {done:,}"
        if self.total:
            width = 30
            filled = min(width, width * done // self.total)
            left = (self.total - done) / rate if rate > 0 else 0.0
            text = (
                f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done:,}/{self.total:,} "
                f"{100 * done / self.total:.0f}% {rate:,.1f}{self.unit}/s, {_clock(left)} left"
            )
        else:
            text += f" {rate:,.1f}{self.unit}/s"
        self._write(f"\r{text}\x1b[K" if self.tty else f"{text}\n")

    def finish(self, done: int) -> None:
        self.update(done, force=True)
        if self.tty:
            self._write("\n")

    def _write(self, text: str) -> None:
        if isinstance(self.stream, OutputWrapper):  # it would end each redrawn line with a newline
            self.stream.write(text, ending="")
        else:
            self.stream.write(text)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
