"""Exception types raised on bad input. Each message names the file (or argument) and the problem."""

from __future__ import annotations


class MotionDataError(ValueError):
    """A motion file or array is missing, malformed or physically invalid."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or was written by an incompatible version."""
