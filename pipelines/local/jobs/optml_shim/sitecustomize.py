"""Job-side shim: remaps `/opt/ml` to the sandbox so scripts that hard-code container paths run unchanged.

Copied onto the PYTHONPATH of a local job; Python imports `sitecustomize` at start-up. Only Python-level
file access is remapped (open, os.*, and what builds on them: pathlib, shutil, glob, os.walk); C
libraries opening a literal `/opt/ml/...` path themselves are not.
"""

from __future__ import annotations

import builtins
import io
import os
from typing import Any

_SRC = "/opt/ml"
_DST = os.environ.get("PDM_LOCAL_OPT_ML", "")


def _map(path: Any) -> Any:
    """The sandbox path for a `/opt/ml[/...]` path; anything else (fds, other paths) unchanged."""
    if isinstance(path, int) or path is None:
        return path
    try:
        raw = os.fspath(path)
    except TypeError:
        return path
    if isinstance(raw, bytes):
        src, dst = _SRC.encode(), _DST.encode()
    else:
        src, dst = _SRC, _DST
    if raw == src or raw.startswith(src + ("/" if isinstance(raw, str) else b"/")):
        return dst + raw[len(src) :]
    return path


def _one(fn: Any) -> Any:
    def wrapper(path: Any = None, *args: Any, **kwargs: Any) -> Any:
        if path is None and fn in (_orig_listdir, _orig_scandir):
            return fn(*args, **kwargs)
        return fn(_map(path), *args, **kwargs)

    wrapper.__name__ = getattr(fn, "__name__", "wrapped")
    wrapper.__doc__ = getattr(fn, "__doc__", None)
    return wrapper


def _two(fn: Any) -> Any:
    def wrapper(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(_map(src), _map(dst), *args, **kwargs)

    wrapper.__name__ = getattr(fn, "__name__", "wrapped")
    wrapper.__doc__ = getattr(fn, "__doc__", None)
    return wrapper


_orig_listdir = os.listdir
_orig_scandir = os.scandir

if _DST:
    _open = _one(io.open)
    builtins.open = _open
    io.open = _open
    for _name in (
        "open", "stat", "lstat", "listdir", "scandir", "makedirs", "mkdir", "remove", "unlink",
        "rmdir", "chdir", "access", "chmod", "utime", "readlink",
    ):  # fmt: skip
        if hasattr(os, _name):
            setattr(os, _name, _one(getattr(os, _name)))
    for _name in ("rename", "replace", "symlink", "link"):
        setattr(os, _name, _two(getattr(os, _name)))
    # A bash wrapper may have exported container paths (e.g. sourced SM_* files): point them here too.
    for _key, _value in list(os.environ.items()):
        if _value == _SRC or _value.startswith(_SRC + "/"):
            os.environ[_key] = _DST + _value[len(_SRC) :]
