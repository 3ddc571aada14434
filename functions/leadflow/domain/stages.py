"""The lifecycle's stages, in order. Kept apart from the rules' models so that code
which only reads stages (the lead, the event log) does not build the rules' schema."""

from __future__ import annotations

from typing import Literal

Stage = Literal["subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist"]
STAGES: tuple[str, ...] = Stage.__args__  # type: ignore[attr-defined]
