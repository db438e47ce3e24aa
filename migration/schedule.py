"""When a migration may work: the working-hours window, the rate limit, and the projected finish.

Pure Python, no Django. A :class:`Window` is a daily time range in local time,
``20:00-06:00`` wrapping past midnight; outside it the job waits. A
:class:`Pacer` spreads retrievals so that, averaged over any batch, no more
than ``rate`` instances per second are asked of the legacy PACS.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime

_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Window:
    """A daily working window, ``start`` inclusive and ``end`` exclusive; ``start > end`` wraps past midnight."""

    start: dtime
    end: dtime

    @classmethod
    def parse(cls, text: str) -> Window:
        """``"HH:MM-HH:MM"``; :class:`ValueError` with a precise message otherwise."""
        match = _WINDOW.match(text.strip())
        if not match:
            raise ValueError(f"a window is HH:MM-HH:MM (24-hour clock), e.g. 20:00-06:00, not {text!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if (h1, m1) == (h2, m2):
            raise ValueError(f"the window {text!r} is empty: its start and end are the same")
        return cls(dtime(h1, m1), dtime(h2, m2))

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def contains(self, moment: datetime) -> bool:
        now = moment.time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end

    def next_start(self, moment: datetime) -> datetime:
        """The first moment at or after ``moment`` inside the window."""
        if self.contains(moment):
            return moment
        start = moment.replace(hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0)
        return start if start > moment else start + timedelta(days=1)

    def end_after(self, moment: datetime) -> datetime:
        """The end of the window ``moment`` is in (``moment`` must be inside it)."""
        end = moment.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        return end if end > moment else end + timedelta(days=1)


def finish_after(moment: datetime, work_seconds: float, window: Window | None) -> datetime:
    """When ``work_seconds`` of work started at ``moment`` ends, working only inside ``window``."""
    if window is None:
        return moment + timedelta(seconds=work_seconds)
    left = timedelta(seconds=work_seconds)
    now = moment
    for _ in range(100_000):  # each turn consumes one window: bounded by the work left
        now = window.next_start(now)
        end = window.end_after(now)
        if now + left <= end:
            return now + left
        left -= end - now
        now = end
    return now + left


class Pacer:
    """At most ``rate`` instances per second on average; :meth:`wait` before asking for ``count`` of them."""

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("a rate limit must be a positive number of instances per second")
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self.next_at = 0.0

    def batch_size(self, default: int) -> int:
        """How many instances one request may ask for: about five seconds' worth under a rate limit."""
        if self.rate is None:
            return default
        return max(1, min(default, int(self.rate * 5)))

    def wait(self, count: int, stop: Callable[[], bool] = lambda: False) -> bool:
        """Sleep until ``count`` instances may be asked for; False if ``stop()`` said stop meanwhile."""
        if self.rate is None:
            return True
        while True:
            left = self.next_at - self.clock()
            if left <= 0:
                break
            if stop():
                return False
            self.sleep(min(left, 1.0))
        self.next_at = max(self.next_at, self.clock()) + count / self.rate
        return True
