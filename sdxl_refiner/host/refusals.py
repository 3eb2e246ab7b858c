"""What a host's API answers for an error of ours: a 4xx status for a refusal, a 5xx for a failure.

Every host of the family takes the status of an exception that escapes a request from its own
``status_code`` attribute (500 without one) and puts its ``detail`` attribute in the body's
``detail``. WebUI 1.10.1 (``modules/api/api.py``, ``handle_exception``) also writes the class and
the text, and prints a traceback for anything but FastAPI's ``HTTPException``; Forge 2 and Neo
leave an ``HTTPException`` to FastAPI, which answers ``{"detail": ...}``. So a refusal is raised
as an ``HTTPException`` that still is the core's error: the same class name in the body and in the
UI's error box, caught by the same ``except`` clauses. A failure is the error itself, its status
saying whether memory ran out; its traceback is in the console (``sampling.failed`` prints it).

The core names the cause (``core.errors.Cause``); the status of each cause is chosen here alone.
"""

from __future__ import annotations

import functools
from http import HTTPStatus

from fastapi.exceptions import HTTPException

from sdxl_refiner.core.errors import Cause, RefinerError

STATUS_BY_CAUSE: dict[Cause, HTTPStatus] = {
    # as the API answers a request body its schema refuses
    Cause.INVALID_ARGUMENT: HTTPStatus.UNPROCESSABLE_ENTITY,
    Cause.NOT_FOUND: HTTPStatus.NOT_FOUND,
    # a checkpoint that is in the list, but cannot refine this base
    Cause.WRONG_MODEL: HTTPStatus.UNPROCESSABLE_ENTITY,
    # the request is fine, the host's state is not: a base that is not SDXL, a schedule changed
    # by another extension
    Cause.CONFLICT: HTTPStatus.CONFLICT,
    # may succeed later, once memory is free: a job queue may retry it
    Cause.OUT_OF_MEMORY: HTTPStatus.SERVICE_UNAVAILABLE,
    Cause.INTERNAL: HTTPStatus.INTERNAL_SERVER_ERROR,
}


def status_of(error: RefinerError) -> HTTPStatus:
    return STATUS_BY_CAUSE[error.cause]


def answered(error: RefinerError) -> RefinerError:
    """The error as it should leave the host's sampling call.

    A refusal comes back as an ``HTTPException`` of the same class and message, and prints its
    one line; a failure is the error itself, its status and ``detail`` set for the API."""
    status = status_of(error)
    if not error.is_refusal:
        error.status_code = status.value
        error.detail = str(error)
        return error
    print(f"SDXL Refiner: refused ({status.value} {status.phrase}): {error}")
    return _answerable_class(type(error))(str(error), error.cause, status)


@functools.cache
def _answerable_class(error_class: type[RefinerError]) -> type[RefinerError]:
    """``error_class`` that is also an ``HTTPException``, under the same name."""
    return type(error_class.__name__, (error_class, HTTPException), {
        "__init__": _init_refusal,
        "__str__": BaseException.__str__,
        "__repr__": BaseException.__repr__,
        "__module__": error_class.__module__,
        "__qualname__": error_class.__qualname__,
        "__doc__": error_class.__doc__,
    })


def _init_refusal(self: HTTPException, message: str, cause: Cause, status: HTTPStatus) -> None:
    # HTTPException.__init__ would make the status the exception's text; the text stays the message
    Exception.__init__(self, message)
    self.cause = cause
    self.status_code = status.value
    self.detail = message
    self.headers = None
