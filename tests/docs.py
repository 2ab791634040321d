"""Reading the docs the tests run: one page's sections, and their fenced blocks."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def section(page: str, *headings: str, level: int = 2, under: str | None = None) -> str:
    """The text of the sections of ``docs/<page>`` at heading ``level`` (2: ``## ``) whose headings start
    with one of ``headings``, each up to the next heading of that level or above, in page order; with
    ``under``, only those inside the ``## `` section of that name (a part of a long page)."""
    text = section(page, under) if under is not None else (DOCS / page).read_text()
    # Never split on "# ": shell comments inside fenced blocks start that way.
    parts = re.split(rf"(?m)^(?=#{{2,{level}}} )", text)
    marks = tuple(f"{'#' * level} {h}" for h in headings)
    chosen = [part for part in parts if part.startswith(marks)]
    assert len(chosen) == len(headings), f"docs/{page}: sections {headings} not all found"
    return "".join(chosen)


def fenced(text: str) -> list[str]:
    """The fenced blocks of ``text`` (any info string), in order."""
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
