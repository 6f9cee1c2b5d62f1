"""`DictConfig`: ``to_dict`` / ``from_dict`` (and JSON ``save`` / ``load``) for dataclass configs, with one policy:
unknown keys are an error."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Self


class DictConfig:
    """Mixin for dataclasses. ``from_dict`` raises ValueError naming any key that is not a field; subclasses
    convert values (nested configs, lists back to tuples) in `_from_json`."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}")
        return cls(**cls._from_json(dict(d)))

    @classmethod
    def _from_json(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Field values as read from JSON -> constructor arguments (default: unchanged)."""
        return d

    def save(self, path: str | Path) -> None:
        """Write ``to_dict()`` as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a JSON file written by `save` (unknown keys are an error, as in `from_dict`)."""
        return cls.from_dict(json.loads(Path(path).read_text()))
