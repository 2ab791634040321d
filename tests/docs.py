"""Reading the docs the tests run: one page's ``## `` sections, and their fenced blocks."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def section(page: str, *headings: str) -> str:
    """The text of the ``## `` sections of ``docs/<page>`` whose headings start with one of ``headings``,
    each up to the next ``## `` heading, in page order."""
    parts = re.split(r"(?m)^(?=## )", (DOCS / page).read_text())
    chosen = [part for part in parts if part.startswith(tuple(f"## {h}" for h in headings))]
    assert len(chosen) == len(headings), f"docs/{page}: sections {headings} not all found"
    return "".join(chosen)


def fenced(text: str) -> list[str]:
    """The fenced blocks of ``text`` (any info string), in order."""
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
