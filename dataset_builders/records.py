"""The canonical paper record that every reader produces and every context consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from qwenphysics.core.errors import UserError


@dataclass(slots=True)
class Paper:
    id: str  # base arXiv id, no version suffix
    title: str
    abstract: str
    categories: list[str]  # primary first
    license: str | None = None
    created: str | None = None  # ISO date (YYYY-MM-DD) of the first version
    authors: str = ""
    comments: str | None = None
    doi: str | None = None
    journal_ref: str | None = None
    withdrawn: bool = False
    source: str = ""  # which input it came from
    extra: dict = field(default_factory=dict)  # full text, sections... (full-text builder)

    @property
    def primary(self) -> str:
        return self.categories[0] if self.categories else ""


class Drop(NamedTuple):
    """A record a reader could not turn into a Paper, with the reason it is counted under."""

    reason: str
    id: str | None = None


class InputError(UserError):
    """An unusable invocation or input (exit 2 with a one-line message)."""
