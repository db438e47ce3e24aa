"""The progress line: redrawn in place on a terminal, a line at a time in a log."""

from __future__ import annotations

import io

from django.core.management.base import OutputWrapper

from pacs.lib.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_line_is_redrawn_in_place_with_the_count_share_and_time_left() -> None:
    screen = Terminal()
    bar = Progress(OutputWrapper(screen), 200, "export", " instances")
    bar.update(50, force=True)
    bar.finish(200)
    out = screen.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n")  # one line, redrawn, ended once
    assert "\rexport [#######.......................] 50/200 25%" in out
    assert "200/200 100%" in out and " instances/s, 0:00:00 left" in out


def test_in_a_log_it_writes_a_line_at_most_every_few_seconds_and_at_the_end() -> None:
    log = io.StringIO()
    bar = Progress(OutputWrapper(log), None, "import", " files", every=3600)
    for done in range(1, 1000):
        bar.update(done)
    bar.finish(1000)
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("import: 1,000 ")
