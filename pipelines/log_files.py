"""Where laion-audit's log files go: $LAION_AUDIT_LOG_DIR, default <tmp>/laion-audit.

A log holds Beam's and its workers' lines and the traceback of an internal error, which
can quote URLs: the folder is 0700 when made here and each file 0600, a default folder
owned by another user (a shared /tmp) gives way to a private one, and a folder keeps
only the newest LOGS_KEPT logs.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import tempfile


def open_private(path: str):
    """`path` opened for appending, made readable by its owner only (0600)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a", encoding="utf-8",
                     errors="backslashreplace")


class LogFolderError(Exception):
    """No log folder can be made, in one line. `config_error`: the folder was named by
    LAION_AUDIT_LOG_DIR (the user's to fix), else this machine's temp folder failed."""

    def __init__(self, message: str, config_error: bool):
        super().__init__(message)
        self.config_error = config_error


LOGS_KEPT = 50  # a log folder keeps this many of the newest logs; older ones are removed
_LOG_NAME = re.compile(r"laion-audit-\d{8}T\d{6}Z-\d+\.log")
_LOG_PATHS: dict[str, str] = {}  # by folder: one log file per process and folder


def log_path() -> str:
    """This process's log file, in $LAION_AUDIT_LOG_DIR (default: <tmp>/laion-audit):
    Beam's and the workers' lines when not -v, and the traceback of an internal error.
    The folder is 0700 when made here, the file 0600, made when first written. A default
    folder that is not this user's (a shared /tmp) gives way to a fresh private one."""
    explicit = os.environ.get("LAION_AUDIT_LOG_DIR")
    folder = explicit or os.path.join(tempfile.gettempdir(), "laion-audit")
    if folder not in _LOG_PATHS:
        usable = _log_folder(folder, bool(explicit))
        _prune_logs(usable)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        _LOG_PATHS[folder] = os.path.join(usable, f"laion-audit-{stamp}-{os.getpid()}.log")
    return _LOG_PATHS[folder]


def _log_folder(folder: str, explicit: bool) -> str:
    """`folder`, made (0700) and checked, or for the default folder a private fallback."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.stat(folder)
        usable = os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)
        mine = info.st_uid == os.getuid()
    except OSError as err:
        if explicit:
            raise LogFolderError(f"LAION_AUDIT_LOG_DIR '{folder}': cannot make the log folder "
                                 f"({err.strerror or type(err).__name__})", True) from None
        usable = mine = False
    if explicit:
        if not usable:
            raise LogFolderError(f"LAION_AUDIT_LOG_DIR '{folder}': not a folder this user can write", True)
        return folder
    if usable and mine:
        if info.st_mode & 0o077:  # an older laion-audit made it readable by all
            os.chmod(folder, 0o700)
        return folder
    try:
        return tempfile.mkdtemp(prefix="laion-audit-logs-")
    except OSError as err:
        raise LogFolderError(f"cannot make a log folder in {tempfile.gettempdir()} "
                             f"({err.strerror or type(err).__name__})", False) from None


def _prune_logs(folder: str) -> None:
    """Keep the LOGS_KEPT newest of laion-audit's logs in `folder` (one more is coming)."""
    with contextlib.suppress(OSError):
        logs = sorted((entry.stat().st_mtime, entry.path) for entry in os.scandir(folder)
                      if _LOG_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False))
        for _, path in logs[: max(0, len(logs) - (LOGS_KEPT - 1))]:
            with contextlib.suppress(OSError):
                os.remove(path)
