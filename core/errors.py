"""The one error type users see: what is wrong, where, and what to do."""

from __future__ import annotations

import os
from pathlib import Path


class TweetyError(Exception):
    """A user-facing failure (bad input file, unsupported model, …). Tracebacks are for bugs only."""

    def __init__(self, what: str, *, path: str | Path | None = None, line: int | None = None, fix: str = ""):
        self.what, self.path, self.line, self.fix = what, path, line, fix
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{what}" + (f" — {fix}" if fix else ""))


# Operating-system failures a user meets on their own machine, in plain words. `errno` → (what, what to do).
_OS_ERRORS = {
    "ENOSPC": (
        "the disk is full (no space left on the device)",
        "free some space on that disk, or choose a folder on another disk, and run it again",
    ),
    "EDQUOT": ("your disk quota is used up", "delete some files or ask for a bigger quota, then run it again"),
    "ENOENT": (
        "a file or folder vanished while it was in use",
        "check the path (a removed USB disk, a folder renamed or deleted meanwhile), then run it again",
    ),
    "EIO": ("the disk reported a read/write error", "check the disk, then run it again"),
}
# A folder that may not be written: said of the folder (the user chose it, and it is what they must change), not in
# the operating system's words (“[Errno 1] Operation not permitted”). `errno` → (why, what to do).
_NOT_WRITABLE = {
    "EACCES": ("permission denied", "choose a folder you may write to, or change that folder's permissions"),
    "EPERM": (
        "the operating system does not allow it: the folder is locked or protected",
        "choose a folder you may write to, or unlock that one",
    ),
    "EROFS": ("the disk is read-only", "choose a folder on a disk you can write to"),
}
# Writers that report a full disk without an errno: gguf-py (`884736 requested and 514960 written`) and the
# safetensors writer (its Rust message quotes the OS error's text).
_SHORT_WRITE = ("requested and", "written")
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded")


def plain_os_error(error: BaseException) -> TweetyError | None:
    """The `TweetyError` for an operating-system failure (a full disk, a read-only or locked folder, a file where a
    folder should be, a vanished path, a short write), naming the path and what to do; None for anything else (a
    bug)."""
    import errno as errno_module

    text = str(error)
    name = errno_module.errorcode.get(getattr(error, "errno", None) or 0, "")
    filename = getattr(error, "filename", None)
    path = Path(os.fsdecode(filename)) if isinstance(filename, (str, bytes, os.PathLike)) else None
    if path is not None and (name == "ENOTDIR" or name == "EEXIST" and not path.is_dir()):
        in_the_way = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if in_the_way is not None:  # `out/spanish.gguf` where `out` is a file: mkdir says “File exists”
            return TweetyError(
                f"{in_the_way} is a file, not a folder, so nothing can be written in it",
                path=path,
                fix="choose a folder, or another name for the file",
            )
    if path is not None and name == "EISDIR":
        return TweetyError(f"{path} is a folder, not a file", path=path, fix="choose a file name, not a folder")
    if name in _NOT_WRITABLE:
        why, fix = _NOT_WRITABLE[name]
        if path is None:
            return TweetyError(why, fix=fix)
        if path.is_file() and name == "EACCES":  # an input to read, or an output file of someone else's
            return TweetyError(
                f"you may not open this file ({why})",
                path=path,
                fix="change the file's permissions, or choose another file",
            )
        folder = path if path.is_dir() else path.parent
        # Our own hidden files (the project's `.tweety` marker) mean nothing to a user: then the folder alone.
        return TweetyError(
            f"Tweety Studio may not write in the folder {folder} ({why})",
            path=None if path.name.startswith(".") else path,
            fix=fix,
        )
    if name not in _OS_ERRORS:
        if any(t in text for t in _NO_SPACE_TEXT) or (
            isinstance(error, OSError) and all(t in text for t in _SHORT_WRITE)
        ):
            name = "EDQUOT" if "quota" in text.lower() else "ENOSPC"
        else:
            return None
    what, fix = _OS_ERRORS[name]
    return TweetyError(what, path=path, fix=fix)


def message_of(error: BaseException) -> str:
    """What a user is told of a failure that is theirs to fix: a `TweetyError`'s message, an operating-system
    failure in plain words (`plain_os_error`), else the error's own text."""
    return str(error if isinstance(error, TweetyError) else plain_os_error(error) or error)


def quiet_developer_warnings(verbose: bool = False) -> None:
    """Warnings meant for developers (torch's "Sparse CSR tensor support is in beta state", transformers'
    deprecations) stay off users' screens; `verbose` (the CLI's -v) shows them."""
    import logging
    import warnings

    if verbose:
        return
    for category in (UserWarning, FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    logging.captureWarnings(False)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
