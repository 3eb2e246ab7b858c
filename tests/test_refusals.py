"""The status each error of ours is answered with, and the form that keeps a refusal's traceback out
of the host's console (host/refusals.py). The real hosts' API answers are in tests/live."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from fastapi.exceptions import HTTPException

from sdxl_refiner.core.errors import (
    REFUSALS,
    Cause,
    CheckpointError,
    ConditioningError,
    PlanError,
    RefinerError,
    SettingsError,
    out_of_memory,
)
from sdxl_refiner.host import refusals
from sdxl_refiner.host.sampling import RefinerFailed, failed

ERROR_CLASSES = [SettingsError, PlanError, ConditioningError, CheckpointError, RefinerFailed]


@pytest.mark.parametrize("cause", list(Cause))
def test_every_cause_has_a_status_a_refusal_4xx_and_a_failure_5xx(cause):
    status = refusals.STATUS_BY_CAUSE[cause]
    assert (400 <= status < 500) == (cause in REFUSALS)
    assert 400 <= status < 600


@pytest.mark.parametrize(("cause", "status"), [
    (Cause.INVALID_ARGUMENT, 422), (Cause.NOT_FOUND, 404), (Cause.WRONG_MODEL, 422), (Cause.CONFLICT, 409),
    (Cause.OUT_OF_MEMORY, 503), (Cause.INTERNAL, 500),
])
def test_the_documented_status_of_each_cause(cause, status):
    assert refusals.STATUS_BY_CAUSE[cause] == status


@pytest.mark.parametrize(("error_class", "cause"), [
    (SettingsError, Cause.INVALID_ARGUMENT), (PlanError, Cause.INVALID_ARGUMENT),
    (ConditioningError, Cause.WRONG_MODEL), (CheckpointError, Cause.WRONG_MODEL), (RefinerFailed, Cause.INTERNAL),
])
def test_each_error_class_has_its_cause_unless_the_raise_site_names_another(error_class, cause):
    assert error_class("why").cause is cause
    assert error_class("why", Cause.CONFLICT).cause is Cause.CONFLICT
    assert error_class("why").cause is cause, "naming a cause changes that error alone"


@pytest.mark.parametrize("error_class", ERROR_CLASSES)
@pytest.mark.parametrize("cause", sorted(REFUSALS, key=lambda cause: cause.value))
def test_a_refusal_is_answered_as_an_http_exception_that_still_is_our_error(capsys, error_class, cause):
    error = error_class("SDXL Refiner: 'steps_percent' must be from 0 to 100", cause)
    answer = refusals.answered(error)
    status = refusals.STATUS_BY_CAUSE[cause]
    assert isinstance(answer, HTTPException) and isinstance(answer, error_class)
    assert type(answer).__name__ == error_class.__name__
    assert vars(answer)["status_code"] == status and vars(answer)["detail"] == str(error)
    assert str(answer) == str(error), "the body's 'errors' and the UI's error box keep the message alone"
    assert answer.cause is cause
    assert capsys.readouterr().out == f"SDXL Refiner: refused ({status.value} {status.phrase}): {error}\n"


@pytest.mark.parametrize("error_class", ERROR_CLASSES)
@pytest.mark.parametrize(("cause", "status"), [(Cause.INTERNAL, 500), (Cause.OUT_OF_MEMORY, 503)])
def test_a_failure_is_answered_as_itself_with_its_5xx_status_and_no_refusal_line(capsys, error_class, cause, status):
    error = error_class("the disk could not be read", cause)
    answer = refusals.answered(error)
    assert answer is error and not isinstance(answer, HTTPException)
    assert vars(answer)["status_code"] == status and vars(answer)["detail"] == str(error)
    assert capsys.readouterr().out == ""


def test_the_http_form_of_a_class_is_made_once():
    first = refusals.answered(SettingsError("a"))
    second = refusals.answered(SettingsError("b"))
    assert type(first) is type(second)
    assert type(refusals.answered(PlanError("c"))) is not type(first)


@pytest.mark.parametrize(("error", "memory"), [
    (MemoryError(), True),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 bytes"), True),
    (type("OutOfMemoryError", (RuntimeError,), {})("torch.OutOfMemoryError"), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    (ValueError("out of memory"), False),
])
def test_out_of_memory_is_told_from_other_failures(error, memory):
    assert out_of_memory(error) is memory


def test_a_failure_from_memory_says_so_and_is_answered_503(capsys):
    failure = failed(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "loading the refiner")
    assert failure.cause is Cause.OUT_OF_MEMORY
    assert str(failure).startswith("SDXL Refiner ran out of memory while loading the refiner: RuntimeError: CUDA out")
    assert "Free memory" in str(failure)
    assert vars(refusals.answered(failure))["status_code"] == 503
    assert "RuntimeError: CUDA out of memory" in capsys.readouterr().err, "the console keeps the error"


def test_any_other_failure_is_answered_500_and_asks_for_a_report():
    failure = failed(KeyError("sigmas"), "planning the sampling pass")
    assert failure.cause is Cause.INTERNAL
    assert "report the error" in str(failure)
    assert vars(refusals.answered(failure))["status_code"] == 500


def test_every_refiner_error_raised_on_purpose_is_one_of_the_known_classes():
    """A new error class must be given its cause: the default of the base class is a failure."""
    assert RefinerError("x").cause is Cause.INTERNAL
    assert {cls for cls in RefinerError.__subclasses__() if cls.__module__ == "sdxl_refiner.core.errors"} == {
        SettingsError, PlanError, ConditioningError, CheckpointError}


def test_statuses_are_http_statuses():
    assert all(isinstance(status, HTTPStatus) for status in refusals.STATUS_BY_CAUSE.values())


def test_fastapis_own_answer_to_a_refusal_is_its_status_and_message():
    """Forge 2 and Neo register no handler for an ``HTTPException``: FastAPI answers it itself."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()

    @app.post("/generate")
    def generate():
        raise refusals.answered(CheckpointError("SDXL Refiner checkpoint 'x' is not in the list", Cause.NOT_FOUND))

    response = TestClient(app).post("/generate")
    assert response.status_code == 404
    assert response.json() == {"detail": "SDXL Refiner checkpoint 'x' is not in the list"}


def test_the_message_of_a_failure_says_the_image_was_not_made_and_what_to_do():
    memory = str(failed(MemoryError(), "loading the refiner"))
    other = str(failed(KeyError("sigmas"), "planning the sampling pass"))
    assert memory.startswith("SDXL Refiner ran out of memory while loading the refiner: MemoryError. The image was "
                             "not made, so that no unrefined image is taken for a refined one. Free memory")
    assert other.startswith("SDXL Refiner failed while planning the sampling pass: KeyError: 'sigmas'. The image was "
                            "not made, so that no unrefined image is taken for a refined one; the console")
    assert memory.endswith("Free memory (a smaller image or batch, the offload residency, or Unload refiner) and "
                           "try again.")
    assert other.endswith("has the traceback. Turn SDXL Refiner off to generate without it, and report the error.")


def raised_by(call) -> BaseException:
    with pytest.raises(BaseException) as caught:
        call()
    return caught.value


def test_what_leaves_the_sampling_call_keeps_the_chain_of_causes():
    """The console's (and a debugger's) "direct cause" is the error behind ours, never ours itself."""
    from sdxl_refiner.host.sampling import raise_for_users

    disk = OSError("disk")
    stored = CheckpointError("the header is corrupt")
    stored.__cause__ = disk
    answer = raised_by(lambda: raise_for_users(stored))
    assert isinstance(answer, HTTPException) and answer.__cause__ is disk

    failure = RefinerFailed("failed while preparing")
    failure.__cause__ = disk
    assert raised_by(lambda: raise_for_users(failure)) is failure and failure.__cause__ is disk

    def raised_inside(error: RefinerError) -> BaseException:
        def call():
            try:
                raise error
            except RefinerError as caught:
                raise_for_users(caught, caught)
        return raised_by(call)

    plan = PlanError("UniPC cannot be split")
    answer = raised_inside(plan)
    assert isinstance(answer, HTTPException) and answer.__cause__ is plan
    inside = RefinerFailed("failed while planning")
    inside.__cause__ = disk
    assert raised_inside(inside) is inside and inside.__cause__ is disk
