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


# Operating-system failures a user meets on their own machine, in plain words. `errno` → (what, what to do).
_OS_ERRORS = {
    "ENOSPC": ("the disk is full (no space left on the device)", "free some space on that disk, or choose a folder "
               "on another disk, and run it again"),
    "EDQUOT": ("your disk quota is used up", "delete some files or ask for a bigger quota, then run it again"),
    "EROFS": ("the disk is read-only", "choose a folder on a disk you can write to"),
    "EACCES": ("permission denied", "choose a folder you may write to, or change the file's permissions"),
    "EPERM": ("the operating system does not allow this", "choose a folder you may write to"),
    "ENOENT": ("a file or folder vanished while it was in use", "check the path (a removed USB disk, a folder "
               "renamed or deleted meanwhile), then run it again"),
    "EIO": ("the disk reported a read/write error", "check the disk, then run it again"),
}
# Writers that report a full disk without an errno: gguf-py (`884736 requested and 514960 written`) and the
# safetensors writer (its Rust message quotes the OS error's text).
_SHORT_WRITE = ("requested and", "written")
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded")


def plain_os_error(error: BaseException) -> TweetyError | None:
    """The `TweetyError` for an operating-system failure (a full disk, a read-only disk, a denied permission, a
    vanished path, a short write), naming the path and what to do; None for anything else (a bug)."""
    import errno as errno_module

    text = str(error)
    name = errno_module.errorcode.get(getattr(error, "errno", None) or 0, "")
    if name not in _OS_ERRORS:
        if any(t in text for t in _NO_SPACE_TEXT) or (isinstance(error, OSError) and all(t in text for t in
                                                                                            _SHORT_WRITE)):
            name = "EDQUOT" if "quota" in text.lower() else "ENOSPC"
        else:
            return None
    what, fix = _OS_ERRORS[name]
    path = getattr(error, "filename", None)
    return TweetyError(what, path=path, fix=fix)


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
