"""Bad input stops the generation from inside sampling with a message that names cause and fix."""

from __future__ import annotations

import contextlib
import io
from http import HTTPStatus
from types import SimpleNamespace

import pytest
from fastapi.exceptions import HTTPException

from sdxl_refiner.core.errors import CheckpointError, ConditioningError, PlanError, SettingsError
from sdxl_refiner.core.samplers import REFUSED_SAMPLER_LABELS
from sdxl_refiner.host import sampling
from sdxl_refiner.host.run_state import RefinerRun
from tests.standin.refiner_runs import CallTrace, assert_restored, refine, snapshot, ui_args
from tests.support.checkpoints import write_checkpoint


def refused(webui, p, args, error_type, *, status: int, before_any_step: bool = True) -> str:
    """Runs ``p``, expects ``error_type`` answered with ``status``, and checks the base is back
    exactly as it was (the same module in the slot, its weights, device and hooks) and, unless the
    refusal can only come at the switch, that no base step ran before it.

    A refusal (4xx) is an ``HTTPException``, which the hosts' API answers without a traceback, and
    prints its one line; a failure (5xx) is not, and keeps the host's traceback."""
    before = snapshot(webui)
    base_calls = CallTrace()
    handle = base_calls.attach(before["unet"], "base")
    console = io.StringIO()
    try:
        with pytest.raises(error_type) as caught, contextlib.redirect_stdout(console):
            refine(webui, p, args)
    finally:
        handle.remove()
    assert_restored(webui, before)
    if before_any_step:
        assert base_calls.calls == [], "refused before any step"
    error = caught.value
    message = str(error)
    assert type(error).__name__ == error_type.__name__, "the body's 'error' names our error"
    assert vars(error)["status_code"] == status
    assert vars(error)["detail"] == message
    refusal_lines = [line for line in console.getvalue().splitlines() if line.startswith("SDXL Refiner: refused")]
    if status < 500:
        assert isinstance(error, HTTPException)
        assert refusal_lines == [f"SDXL Refiner: refused ({status} {HTTPStatus(status).phrase}): {message}"]
    else:
        assert not isinstance(error, HTTPException)
        assert refusal_lines == []
    for folder in {str(webui.models_dir), str(webui.models_dir.resolve())}:
        assert folder not in message, "API callers see checkpoint names, not the server's folders"
    return message


def test_an_unknown_checkpoint_name_is_refused_with_where_to_find_names(webui):
    webui.write_pair()
    message = refused(webui, webui.txt2img(), ui_args(checkpoint="/etc/passwd"), CheckpointError, status=404)
    assert "'/etc/passwd'" in message
    assert "/sdapi/v1/sd-models" in message


def test_no_checkpoint_chosen_is_refused(webui):
    webui.write_pair()
    message = refused(webui, webui.txt2img(), ui_args(checkpoint=""), SettingsError, status=422)
    assert "'checkpoint' is empty" in message


@pytest.mark.parametrize(("kind", "why"), [
    ("sd1", "another latent space"), ("sd2", "another latent space"), ("inpaint", "inpainting"),
])
def test_a_checkpoint_that_cannot_refine_sdxl_is_refused_before_any_step_saying_each_thing_once(webui, kind, why):
    webui.write_pair()
    write_checkpoint(webui.models_dir / f"{kind}.safetensors", kind)
    webui.sd_models.list_models()
    message = refused(webui, webui.txt2img(), ui_args(checkpoint=f"{kind}.safetensors"), CheckpointError,
                      status=422)
    assert message.startswith(f"SDXL Refiner checkpoint '{kind}.safetensors' is ")
    assert message.count(f"{kind}.safetensors") == 1
    assert why in message
    assert message.lower().count("choose an sdxl refiner") == 1


@pytest.mark.parametrize("given", ["None", "none"])
def test_a_checkpoint_given_as_none_is_refused_quoting_the_value_given(webui, given):
    webui.write_pair()
    message = refused(webui, webui.txt2img(), ui_args(checkpoint=given), CheckpointError, status=422)
    assert f"(checkpoint: {given!r})" in message
    assert "''" not in message


def test_a_corrupt_refiner_in_a_subfolder_is_named_as_the_checkpoint_list_names_it(webui):
    webui.write_pair()
    broken = webui.models_dir / "refiners" / "broken.safetensors"
    broken.parent.mkdir()
    broken.write_bytes(b"\xff" * 64)
    webui.sd_models.list_models()
    message = refused(webui, webui.txt2img(), ui_args(checkpoint="broken"), CheckpointError, status=422)
    assert "'refiners/broken.safetensors'" in message


@pytest.mark.parametrize(
    ("failure", "memory_advice"),
    [
        (RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 bytes"), True),
        (MemoryError(), True),
        (TypeError("__init__() got an unexpected keyword argument 'use_fp8'"), False),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    ],
)
def test_a_refiner_whose_load_fails_is_named_without_its_folder_with_memory_advice_only_for_memory(
    webui, monkeypatch, failure, memory_advice
):
    from sdxl_refiner.bindings.webui import unet

    def failing_build(params):
        raise failure

    webui.write_pair()
    monkeypatch.setattr(unet, "build_unet", failing_build)
    message = refused(webui, webui.txt2img(steps=4), ui_args(), CheckpointError, before_any_step=False,
                      status=503 if memory_advice else 500)
    assert "'refiner.safetensors'" in message
    assert f"{type(failure).__name__}: {failure}" in message
    assert ("Free memory" in message) == memory_advice
    assert ("traceback" in message) != memory_advice


def test_a_base_that_is_not_sdxl_is_refused(webui):
    webui.write_pair()
    webui.shared.sd_model.is_sdxl = False
    message = refused(webui, webui.txt2img(), ui_args(), CheckpointError, status=409)
    assert "not SDXL" in message
    assert "Load an SDXL base" in message


def test_an_sdxl_inpainting_base_is_refused(webui):
    webui.write_pair()
    webui.shared.sd_model.is_sdxl_inpaint = True
    message = refused(webui, webui.txt2img(), ui_args(), CheckpointError, status=409)
    assert "inpainting" in message


def test_one_step_goes_to_the_refiner_and_the_infotext_says_why(webui):
    webui.write_pair()
    p = webui.txt2img(steps=1)
    refine(webui, p)
    assert p.extra_generation_params["SDXL Refiner split"] == "base 0 / refiner 1"
    assert "1 step" in p.extra_generation_params["SDXL Refiner notes"]


def encoder_refusal(refiner: str, why: str) -> str:
    return (
        f"SDXL Refiner checkpoint {refiner!r}: its text encoder is not the one of the base 'base.safetensors', "
        f"and {why}. Use the refiner released with this base (the SDXL 1.0 base and refiner share their text "
        "encoder), or a refiner-type checkpoint in .safetensors whose OpenCLIP encoder has the base's architecture."
    )


def test_a_base_type_refiner_with_other_text_encoders_is_refused(webui):
    webui.write_pair()
    webui.write_checkpoint("other-base.safetensors", "base", seed=5)
    message = refused(webui, webui.txt2img(), ui_args(checkpoint="other-base.safetensors"), ConditioningError,
                      status=422)
    assert message == encoder_refusal(
        "other-base.safetensors", "only a refiner-type .safetensors checkpoint can bring its own encoder")


def test_a_refiner_whose_own_text_encoder_has_another_architecture_is_refused(webui):
    webui.write_pair()
    webui.write_checkpoint("other-vocab.safetensors", "refiner", seed=5, widths=webui.sgm.TinySdxlWidths(vocab=256))
    message = refused(webui, webui.txt2img(), ui_args(checkpoint="other-vocab.safetensors"), ConditioningError,
                      status=422)
    assert message == encoder_refusal(
        "other-vocab.safetensors", "its OpenCLIP encoder does not have the base's architecture to run in its place")


def test_errors_name_the_base_and_the_refiner_as_the_checkpoint_list_does(webui, tmp_path):
    """An error that reaches the user names both files by their names in the list, never by path,
    also for a base outside models/Stable-diffusion (--ckpt-dir)."""
    webui.write_pair()
    base = SimpleNamespace(filename=str(tmp_path / "elsewhere" / "my base.safetensors"), name="my base.safetensors")
    p = SimpleNamespace(sd_model=SimpleNamespace(sd_checkpoint_info=base))
    run = RefinerRun(checkpoint_info=webui.checkpoint("refiner.safetensors"))
    error = ConditioningError(
        f"reading {p.sd_model.sd_checkpoint_info.filename} and {run.checkpoint_info.filename} failed")
    assert str(sampling.for_users(p, run, error)) == "reading my base.safetensors and refiner.safetensors failed"


def test_invalid_settings_reach_the_user_from_the_sampling_call(webui):
    webui.write_pair()
    message = refused(webui, webui.txt2img(), ui_args(steps_percent=140), SettingsError, status=422)
    assert "140" in message


@pytest.mark.parametrize("sampler", REFUSED_SAMPLER_LABELS)
def test_samplers_whose_switch_cannot_be_placed_exactly_are_refused_with_alternatives(webui, sampler):
    webui.write_pair()
    message = refused(webui, webui.txt2img(sampler_name=sampler, steps=4), ui_args(), PlanError, status=422)
    assert repr(sampler) in message
    assert "Pick Euler" in message


def test_the_builtin_refiner_is_turned_off_for_the_generation_and_the_infotext_says_so(webui, capsys):
    webui.write_pair()
    p = webui.txt2img(refiner_checkpoint="refiner.safetensors", refiner_switch_at=0.5)
    result = refine(webui, p)
    assert webui.sd_models.builtin_refiner_switches == []
    assert p.refiner_checkpoint_info is None
    assert "built-in refiner was turned off" in result.infotexts[0]
    console = capsys.readouterr().out.splitlines()
    assert ("SDXL Refiner: the WebUI's built-in refiner was turned off for this generation "
            "(SDXL Refiner runs instead).") in console


def test_the_builtin_refiner_set_to_none_gets_no_note(webui):
    webui.write_pair()
    p = webui.txt2img(refiner_checkpoint="None", refiner_switch_at=0.5)
    result = refine(webui, p)
    assert "built-in refiner" not in result.infotexts[0]
    assert "SDXL Refiner split" in p.extra_generation_params


def test_the_builtin_refiner_alone_is_left_alone(webui):
    webui.write_pair()
    p = webui.txt2img(refiner_checkpoint="refiner.safetensors", refiner_switch_at=0.5)
    refine(webui, p, ui_args(enabled=False))
    assert len(webui.sd_models.builtin_refiner_switches) == 1


def test_a_listed_refiner_deleted_since_is_not_found_and_named_as_the_list_names_it(webui):
    """The renamed message keeps the cause: 404, as for a name outside the list."""
    webui.write_pair()
    (webui.models_dir / "refiner.safetensors").unlink()
    message = refused(webui, webui.txt2img(), ui_args(), CheckpointError, status=404)
    assert "'refiner.safetensors' does not exist" in message
