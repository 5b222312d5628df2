"""Never over a user's file: the files written beside an export and in a project's model folders, and their markers.

Files are written atomically (core.jobs.atomic_file) and never over a user's file: a Modelfile or README.md that
Tweety Studio wrote carries its marker line and may be replaced; any other is refused unless `overwrite`.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import TweetyError

MODELFILE = "Modelfile"
CARD = "README.md"
# A file that starts with (or, for the card, contains) its marker was written by Tweety Studio and may be replaced.
MODELFILE_MARKER = "# Written by Tweety Studio"
CARD_MARKER = "<!-- Written by Tweety Studio"


def _ours(path: Path, marker: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return marker in f.read(4096)
    except OSError:
        return False


def is_free(path: Path, marker: str) -> bool:
    """Nothing at `path`, or a file Tweety Studio wrote."""
    return not path.exists() or _ours(path, marker)


def check_free(path: Path, marker: str, overwrite: bool) -> None:
    """Refuse `path` when it holds a file Tweety Studio did not write (unless `overwrite`)."""
    if not overwrite and not is_free(path, marker):
        raise TweetyError(
            f"{path.name} exists and was not written by Tweety Studio; Tweety Studio never overwrites your files",
            path=path,
            fix="move it away or export into another folder (or confirm replacing it: --force)",
        )
