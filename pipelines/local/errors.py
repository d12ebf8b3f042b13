"""Errors the job runners raise: a refused store key or a request the local engine cannot run."""

from __future__ import annotations


class LocalEngineError(Exception):
    """Base of the local engine's own errors (a job failure is a result, never one of these)."""


class StoreError(LocalEngineError):
    """An object-store URI or key that is malformed, escapes the root, or cannot be written."""


class NoSuchKey(StoreError):
    """The object (or every object under a prefix) does not exist; mirrors S3's NoSuchKey."""


class UnsupportedError(LocalEngineError):
    """A request field, image or mode the local engine cannot emulate; the message names it."""
