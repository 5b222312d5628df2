"""The one error type users see: what is wrong, where, and what to do."""
from __future__ import annotations

from pathlib import Path


class TweetyError(Exception):
    """A user-facing failure (bad input file, unsupported model, …). Tracebacks are for bugs only."""

    def __init__(self, what: str, *, path: str | Path | None = None, line: int | None = None, fix: str = ""):
        self.what, self.path, self.line, self.fix = what, path, line, fix
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{what}" + (f" — {fix}" if fix else ""))
