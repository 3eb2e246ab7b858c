"""Against a running WebUI 1.10.1 (``WEBUI_URL``); skipped without one. See tests/live/README.md."""

from __future__ import annotations

import pytest

from tests.live.webui_api import (
    BASE_COPY,
    REFINER,
    REFINER_OWN_TEXT,
    REFINER_WRONG_CONFIG,
    ApiError,
    infotext,
    ours,
    pixels,
    small_png,
)

pytestmark = pytest.mark.live


def test_refiner_off_and_zero_percent_give_the_same_pixels_and_infotext(api):
    off = api.txt2img()
    zero = api.txt2img(refiner=ours(steps_percent=0))
    assert pixels(off) == pixels(zero)
    assert infotext(off) == infotext(zero)


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "DPM++ 2M SDE", "Heun", "DPM++ SDE", "DPM++ 2M", "DDIM", "PLMS", "LCM", "DPM2 a"])
def test_a_copy_of_the_base_as_refiner_gives_the_base_only_pixels(api, sampler):
    off = api.txt2img(sampler_name=sampler)
    refined = api.txt2img(sampler_name=sampler, refiner=ours(BASE_COPY, 50))
    assert pixels(off) == pixels(refined)
    assert "SDXL Refiner" in infotext(refined)


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M SDE"])
def test_the_refiner_gives_the_pixels_of_the_builtin_refiner_switching_at_the_same_step(api, sampler):
    """The WebUI's built-in refiner builds the whole refiner checkpoint from its own .yaml (head
    width 32, not the family's 64): an independent oracle for the UNet ours builds. By sampling
    steps, switch at 0.75 of 8 one-call steps is model call 6, as a 25 % share is. The built-in one
    runs first: loading another model type can move the WebUI's float results by a unit in the
    last place, so both images are made after that load."""
    with api.options(refiner_switch_by_sample_steps=True):
        builtin = api.txt2img(sampler_name=sampler, refiner_checkpoint=REFINER, refiner_switch_at=0.75)
    refined = api.txt2img(sampler_name=sampler, refiner=ours(REFINER, 25))
    assert "Refiner: " in infotext(builtin) and "SDXL Refiner split: base 6 / refiner 2" in infotext(refined)
    assert pixels(builtin) == pixels(refined)
    assert pixels(refined) != pixels(api.txt2img(sampler_name=sampler))


def test_a_config_that_contradicts_the_weights_is_refused_naming_the_field_and_both_values(api):
    with pytest.raises(ApiError) as caught:
        api.txt2img(refiner=ours(REFINER_WRONG_CONFIG, 25))
    body = caught.value.body
    assert "model_channels is 48 in the config and 64 in the weights" in body
    assert REFINER_WRONG_CONFIG.replace(".safetensors", ".yaml") in body
    assert "/Stable-diffusion/" not in body, "the refusal names files as the checkpoint list does"


def test_the_refiner_changes_the_image_and_says_so_in_the_infotext(api):
    off = api.txt2img()
    refined = api.txt2img(refiner=ours(REFINER, 25))
    assert pixels(off) != pixels(refined)
    assert "SDXL Refiner split: base 6 / refiner 2" in infotext(refined)


def test_positional_and_named_args_give_the_same_image(api):
    named = api.txt2img(refiner=ours(REFINER, 25))
    positional = api.txt2img(refiner=[True, REFINER, 25, 6.0, 2.5, 0, "default"])
    assert pixels(named) == pixels(positional)


def test_the_webui_drops_positional_args_beyond_the_panels_twelve_before_we_see_them(api):
    """As the README says: a thirteenth value is not ours to refuse; the image is the twelve's."""
    twelve = [True, REFINER, 25, 6.0, 2.5, 0, "default", "", "", 0, 1.0, "none"]
    assert pixels(api.txt2img(refiner=[*twelve, "stray"])) == pixels(api.txt2img(refiner=twelve))


def test_img2img_runs_the_refiner_on_the_steps_it_runs(api):
    response = api.img2img(init_images=[small_png()], denoising_strength=0.5, refiner=ours(REFINER, 50))
    assert len(response["images"]) == 1
    assert "SDXL Refiner split: base 2 / refiner 3" in infotext(response)


def test_hires_fix_runs_with_the_refiner_on_both_passes(api):
    response = api.txt2img(enable_hr=True, hr_scale=2, hr_upscaler="Latent", hr_second_pass_steps=4,
                           denoising_strength=0.5, refiner=ours(REFINER, 50, hires_pass="both"))
    assert len(response["images"]) == 1
    assert "SDXL Refiner" in infotext(response)


def test_a_refiner_with_its_own_text_encoder_encodes_the_prompts_itself(api):
    response = api.txt2img(refiner=ours(REFINER_OWN_TEXT, 50), prompt="a (red:1.3) fox BREAK in the snow")
    assert "own text encoder" in infotext(response)
    again = api.txt2img(refiner=ours(REFINER_OWN_TEXT, 50), prompt="a (red:1.3) fox BREAK in the snow")
    assert pixels(again) == pixels(response)
    assert pixels(api.txt2img()) == pixels(api.txt2img(refiner=ours(REFINER, 0)))


def test_a_name_outside_the_checkpoint_list_is_refused(api):
    with pytest.raises(ApiError) as caught:
        api.txt2img(refiner=ours("/etc/passwd", 20))
    assert "not in the WebUI's checkpoint list" in caught.value.body
