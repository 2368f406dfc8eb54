"""The console a report is printed on: rich's own on a terminal, plain text elsewhere."""

from __future__ import annotations

import io
import os
import sys
from typing import IO, Any, cast

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderResult
from rich.measure import Measurement
from rich.text import Text

__all__ = ["Tail", "console", "heading"]


PLAIN_WIDTH = 1000  # not a terminal: no line is wrapped or cut at 80 columns


class _Unpadded(io.TextIOBase):
    """A text stream that writes each line without the spaces rich pads it with."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.pending = stream, ""

    def write(self, text: str) -> int:
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        if lines:
            self.stream.write("".join(line.rstrip() + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        self.stream.write(self.pending)
        self.pending = ""
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def console(stderr: bool = False) -> Console:
    """The console a report is printed on: rich's on a terminal; elsewhere (a file, a pipe)
    plain text without colour or trailing spaces, its lines as long as they are (COLUMNS, if
    set, still sets a width)."""
    stream = sys.stderr if stderr else sys.stdout
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return Console(stderr=stderr)
    given = os.environ.get("COLUMNS", "")  # a width asked for, as a terminal's would be
    width = int(given) if given.isdigit() and int(given) > 0 else PLAIN_WIDTH
    return Console(file=cast(IO[str], _Unpadded(stream)), width=width, color_system=None,
                   highlight=False, emoji=False)  # fmt: skip


def heading(console: Console, title: str) -> None:
    """A rule with a title on a terminal; the title alone elsewhere."""
    if console.is_terminal:
        console.rule(title)
    else:
        console.print(title)


class Tail:
    """A `file:line` on one line that, when wider than its cell, is cut at its start
    (`  first at …/Downloads/orders_export.csv:12`: what comes before it, `lead`, is kept),
    never at its end: the line number and the file's name are what a reader needs, the
    start of a long folder path the least."""

    def __init__(
        self, text: str, lead: str = "", style: str = "dim", justify: JustifyMethod = "left"
    ) -> None:
        self.text, self.lead, self.style, self.justify = text, lead, style, justify

    def cut(self, width: int) -> str:
        whole = self.lead + self.text
        if cell_len(whole) <= width:
            return whole
        kept, room = self.text, width - cell_len(self.lead) - 1
        while kept and cell_len(kept) > room:
            kept = kept[1:]
        return self.lead + "…" + kept

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(self.cut(options.max_width), self.style, justify=self.justify, no_wrap=True)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        whole = cell_len(self.lead + self.text)
        return Measurement(min(whole, cell_len(self.lead) + 12), whole)
