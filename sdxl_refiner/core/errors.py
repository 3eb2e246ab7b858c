"""Errors meant for users: each names the input, the value, what is allowed and the fix.

Each error also names its cause, in the core's own terms: whether the request was at fault, named
something that is not there, chose a model of the wrong kind, or met a host in a state it cannot
run in; or whether the extension itself failed. The host layer maps the cause to what the host's
API answers (``host/refusals.py``), so that a client, a job queue or an operator can tell a
refusal of bad input from a failure without reading the message.
"""

from __future__ import annotations

import enum


class Cause(enum.Enum):
    INVALID_ARGUMENT = "invalid argument"
    NOT_FOUND = "not found"
    WRONG_MODEL = "wrong kind of model"
    CONFLICT = "conflicts with the host's state"
    OUT_OF_MEMORY = "out of memory"
    INTERNAL = "internal failure"


REFUSALS = frozenset({Cause.INVALID_ARGUMENT, Cause.NOT_FOUND, Cause.WRONG_MODEL, Cause.CONFLICT})
"""The causes that are the request's or the host's, not ours: trying again unchanged cannot help."""


class RefinerError(Exception):
    """Base of every error this extension raises on purpose; the message is shown to the user.

    ``cause`` defaults to the class's; a raise site whose cause differs from its class's names it."""

    cause: Cause = Cause.INTERNAL

    def __init__(self, message: str, cause: Cause | None = None):
        super().__init__(message)
        if cause is not None:
            self.cause = cause

    @property
    def is_refusal(self) -> bool:
        return self.cause in REFUSALS


class SettingsError(RefinerError, ValueError):
    """An argument from the UI, the API, X/Y/Z or infotext is not acceptable."""

    cause = Cause.INVALID_ARGUMENT


class PlanError(RefinerError):
    """The switch cannot be placed exactly for this sampler or schedule."""

    cause = Cause.INVALID_ARGUMENT


class ConditioningError(RefinerError):
    """The refiner's conditioning cannot be built from the base's, or does not fit the refiner UNet."""

    cause = Cause.WRONG_MODEL


class CheckpointError(RefinerError):
    """A refiner checkpoint is missing, unreadable, corrupt or of a kind that cannot refine SDXL."""

    cause = Cause.WRONG_MODEL


def out_of_memory(error: BaseException) -> bool:
    """Memory ran out: in RAM, or on the GPU (torch reports that as ``OutOfMemoryError``, a
    RuntimeError subclass, and older builds and other backends as a plain RuntimeError with this
    text). Found by name so that this module needs no torch."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "not enough memory" in text)
