"""Small records shared by the engine and the command handlers."""

from __future__ import annotations

from dataclasses import dataclass

from .vectors import VectorIndex


@dataclass
class SetInfo:
    id: int
    name: str
    dims: int
    metric: str
    metrics: list[str]
    engines: list[str]
    index: VectorIndex


@dataclass
class Binding:
    """What a `_ref` names: object ids (in result order) and their class when known."""

    ids: list[int]
    cls: str | None
    conns: bool = False
