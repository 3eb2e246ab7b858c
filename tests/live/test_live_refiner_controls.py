"""The refiner's own prompt, negative prompt, CFG scale and noise in a real WebUI 1.10.1.

The oracle: a byte copy of the base as refiner at a full share runs every step with the base's
weights, so each control must give exactly what the WebUI gives with that value as the
generation's own (its prompt, its CFG, its "sigma noise" option). At a partial share a changed
control must change the copy's image (it acts from the switch on), and at its default nothing.
"""

from __future__ import annotations

import pytest

from tests.live.webui_api import BASE_COPY, REFINER, infotext, ours, pixels, small_png

pytestmark = pytest.mark.live

OWN = {"prompt": "film grain, skin pores AND sharp detail :0.6", "negative_prompt": "jpeg artifacts, smudge",
       "cfg_scale": 3.5}
AS_GENERATION = {"prompt": OWN["prompt"], "negative_prompt": OWN["negative_prompt"], "cfg_scale": 3.5}


def test_the_controls_at_their_defaults_give_todays_pixels_and_infotext(api):
    plain = api.txt2img(refiner=ours(REFINER, 50))
    defaults = api.txt2img(refiner=ours(REFINER, 50, prompt="", negative_prompt="", cfg_scale=0, noise_multiplier=1))
    positional = api.txt2img(refiner=[True, REFINER, 50, 6, 2.5, 0, "Default (from settings)", "", "", 0, 1])
    assert pixels(plain) == pixels(defaults) == pixels(positional)
    assert infotext(plain) == infotext(defaults) == infotext(positional)


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M SDE", "DPM++ 2S a"])
def test_with_the_base_copy_at_a_full_share_the_refiners_values_act_as_the_generations_own(api, sampler):
    base_only = api.txt2img(sampler_name=sampler, batch_size=2, **AS_GENERATION)
    refined = api.txt2img(sampler_name=sampler, batch_size=2, refiner=ours(BASE_COPY, 100, **OWN))
    assert pixels(refined) == pixels(base_only)
    assert "SDXL Refiner split: base 0 / refiner 8" in infotext(refined)


@pytest.mark.parametrize("sampler", ["DPM2 a", "DPM++ SDE"])
def test_with_the_base_copy_at_a_full_share_the_refiner_noise_is_the_webuis_sigma_noise(api, sampler):
    refined = api.txt2img(sampler_name=sampler, refiner=ours(BASE_COPY, 100, noise_multiplier=0.6))
    unscaled = api.txt2img(sampler_name=sampler, refiner=ours(BASE_COPY, 100))
    with api.options(s_noise=0.6):
        base_only = api.txt2img(sampler_name=sampler)
    assert "Sigma noise: 0.6" in infotext(base_only)
    assert pixels(refined) == pixels(base_only)
    assert pixels(refined) != pixels(unscaled)


@pytest.mark.parametrize("control", [{"prompt": "film grain"}, {"negative_prompt": "smudge"}, {"cfg_scale": 2.0},
                                     {"noise_multiplier": 0.4}])
def test_at_a_partial_share_each_control_changes_the_image_of_the_copy(api, control):
    plain = api.txt2img(sampler_name="Euler a", refiner=ours(BASE_COPY, 50))
    changed = api.txt2img(sampler_name="Euler a", refiner=ours(BASE_COPY, 50, **control))
    assert pixels(changed) != pixels(plain)
    assert pixels(plain) == pixels(api.txt2img(sampler_name="Euler a"))


def test_the_real_refiner_in_img2img_and_hires_fix_takes_its_prompt_and_cfg(api):
    hires = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 4,
             "denoising_strength": 0.5}
    plain = api.txt2img(**hires, refiner=ours(REFINER, 50, hires_pass="both"))
    own = api.txt2img(**hires, refiner=ours(REFINER, 50, hires_pass="both", **OWN))
    assert pixels(own) != pixels(plain)
    assert "SDXL Refiner hires split" in infotext(own)
    copy_args = ours(BASE_COPY, 100, hires_pass="both", **OWN)
    assert pixels(api.txt2img(**hires, refiner=copy_args)) == pixels(api.txt2img(**hires, **AS_GENERATION))

    img2img = {"init_images": [small_png()], "denoising_strength": 0.6}
    api.img2img(**img2img)  # the first img2img after a start encodes with an unseeded generator
    plain = api.img2img(**img2img, refiner=ours(REFINER, 50))
    own = api.img2img(**img2img, refiner=ours(REFINER, 50, **OWN))
    assert pixels(own) != pixels(plain)
    copy = api.img2img(**img2img, refiner=ours(BASE_COPY, 100, **OWN))
    assert pixels(copy) == pixels(api.img2img(**img2img, **AS_GENERATION))


@pytest.mark.parametrize("hires_pass", ["first", "second"])
def test_the_pass_choice_of_hires_fix_gives_the_refiners_prompts_to_that_pass_alone(api, hires_pass):
    """The WebUI's own hires prompt is the oracle: the copy at a full share in one pass only is the
    base with the refiner's prompts in that pass and the generation's in the other."""
    hires = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 4,
             "denoising_strength": 0.5}
    own = {"prompt": "film grain", "negative_prompt": "smudge"}
    main = {"prompt": "a red fox in the snow", "negative_prompt": "blurry"}
    first, second = (own, main) if hires_pass == "first" else (main, own)
    oracle = api.txt2img(**hires, **first, hr_prompt=second["prompt"], hr_negative_prompt=second["negative_prompt"])
    refined = api.txt2img(**hires, **main, refiner=ours(BASE_COPY, 100, hires_pass=hires_pass, **own))
    assert pixels(refined) == pixels(oracle)


def test_a_refiner_prompt_acts_from_the_switch_on_as_the_webuis_prompt_editing_does(api):
    """``[a:b:3]`` is a for steps 1-4 and b from step 5: the refiner prompt b after 4 base steps of 8."""
    edited = api.txt2img(prompt="[a red fox in the snow:film grain:3]", negative_prompt="[blurry:smudge:3]")
    refined = api.txt2img(refiner=ours(BASE_COPY, 50, prompt="film grain", negative_prompt="smudge"))
    assert "SDXL Refiner split: base 4 / refiner 4" in infotext(refined)
    assert pixels(refined) == pixels(edited)


def test_comments_in_the_refiner_prompt_are_stripped_as_in_the_main_prompt(api):
    commented = api.txt2img(refiner=ours(REFINER, 50, prompt="film grain # and a note\n# a whole line"))
    plain = api.txt2img(refiner=ours(REFINER, 50, prompt="film grain"))
    assert pixels(commented) == pixels(plain)


def test_a_noise_with_a_sampler_that_adds_none_changes_nothing_and_says_so(api):
    plain = api.txt2img(sampler_name="DPM++ 2M", refiner=ours(REFINER, 50))
    scaled = api.txt2img(sampler_name="DPM++ 2M", refiner=ours(REFINER, 50, noise_multiplier=0.5))
    assert pixels(plain) == pixels(scaled)
    assert "refiner noise 0.5 had no effect: DPM++ 2M adds no ancestral or SDE noise" in infotext(scaled)


def test_png_info_gives_back_every_control_and_the_infotext_field_regenerates_the_image(api):
    values = {"prompt": "grain, pores: fine", "negative_prompt": "smudge", "cfg_scale": 4.5, "noise_multiplier": 0.85}
    refined = api.txt2img(sampler_name="Euler a", refiner=ours(REFINER, 50, **values))
    parameters = api.png_info(refined)["parameters"]
    assert parameters["SDXL Refiner prompt"] == "grain, pores: fine"
    assert parameters["SDXL Refiner negative prompt"] == "smudge"
    assert parameters["SDXL Refiner CFG scale"] == "4.5"
    assert parameters["SDXL Refiner noise"] == "0.85"
    again = api.txt2img(sampler_name="Euler a", infotext=infotext(refined))
    assert pixels(again) == pixels(refined)


@pytest.mark.parametrize(("axis", "values", "field"), [
    ("SDXL Refiner CFG scale", [0, 2.5], "cfg_scale"),
    ("SDXL Refiner noise", [1, 0.4], "noise_multiplier"),
])
def test_an_xyz_plot_over_cfg_or_noise_gives_the_cells_of_single_generations(api, axis, values, field):
    args = [api.xyz_axis(axis), ", ".join(map(str, values)), [], 0, "", [], 0, "", [],
            True, True, False, False, False, False, False, 0, False]
    grid = api.txt2img(sampler_name="Euler a", script_name="x/y/z plot", script_args=args, refiner=ours(REFINER, 50))
    cells = pixels(grid)[1:]
    singles = [pixels(api.txt2img(sampler_name="Euler a", refiner=ours(REFINER, 50, **{field: v})))[0] for v in values]
    assert cells == singles
    assert singles[0] != singles[1]
