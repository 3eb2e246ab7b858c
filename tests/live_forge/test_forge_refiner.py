"""SDXL Refiner inside a real Forge 2 or Forge Neo: the exact handoff, its oracle, and what it never reloads.

The oracle is a byte copy of the base chosen as the refiner: the handoff must then give the
base-only pixels, for every sampler the host lists (or refuse the sampler by name). The real
refiner must change the image, and the host's own built-in refiner, which switches at the same
call for Euler, is the oracle for what the refiner's steps must give.
"""

from __future__ import annotations

import json

import pytest

from sdxl_refiner.host.sampling import builtin_off_note
from tests.live.webui_api import (
    FORGE_BASE,
    FORGE_BASE_COPY,
    FORGE_BASE_FINETUNE,
    FORGE_REFINER,
    FORGE_REFINER_OWN_TEXT,
    ApiError,
    infotext,
    ours,
    pixels,
    small_png,
    stopped_at,
)

pytestmark = pytest.mark.live

RELOAD_LINES = ("K-Model Created", "Loading Model", "StateDict Keys")


def on_base(**fields) -> dict:
    return {"override_settings": {"sd_model_checkpoint": FORGE_BASE}, "width": 64, "height": 64, "steps": 8, **fields}


def test_a_copy_of_the_base_gives_the_base_only_image_for_every_sampler_the_host_lists_or_a_refusal(forge_api, family):
    listed = [sampler["name"] for sampler in forge_api.call("/sdapi/v1/samplers")]
    changed, refused = [], []
    for sampler in listed:
        fields = on_base(sampler_name=sampler)
        base_only = forge_api.txt2img(**fields)
        try:
            copy = forge_api.txt2img(**fields, refiner=ours(FORGE_BASE_COPY, 50))
        except ApiError as error:
            refused.append(sampler)
            assert f"Sampler {sampler!r}" in error.body and "turn SDXL Refiner off" in error.body, error.body
            continue
        if pixels(copy) != pixels(base_only):
            changed.append(sampler)
        assert "SDXL Refiner split: base " in infotext(copy), sampler
    assert not changed, f"a copy of the base as refiner changed the image with {changed}"
    assert set(refused) == family.refused_samplers & set(listed)
    assert len(listed) - len(refused) >= family.accepted_samplers_at_least, listed


def builtin_refined(forge_api, family, checkpoint: str, switch_at: float = 0.5) -> dict:
    """The host's own built-in refiner, switching at the same step as ours (it reloads the whole file)."""
    with forge_api.options(**family.builtin_options):
        return forge_api.txt2img(**on_base(refiner_checkpoint=checkpoint, refiner_switch_at=switch_at))


def test_the_refiner_changes_the_image_and_equals_the_hosts_own_refiner_switching_at_the_same_step(forge_api, family):
    base_only = forge_api.txt2img(**on_base())
    refined = forge_api.txt2img(**on_base(), refiner=ours(family.builtin_refiner, 50))
    builtin = builtin_refined(forge_api, family, family.builtin_refiner)
    assert pixels(refined) != pixels(base_only)
    assert pixels(refined) == pixels(builtin)
    assert "SDXL Refiner split: base 4 / refiner 4" in infotext(refined)
    assert pixels(forge_api.txt2img(**on_base())) == pixels(base_only)


def test_a_base_type_fine_tune_as_the_refiner_takes_the_base_conds_and_changes_the_image(forge_api):
    base_only = forge_api.txt2img(**on_base())
    fine_tune = forge_api.txt2img(**on_base(), refiner=ours(FORGE_BASE_FINETUNE, 50))
    refined = forge_api.txt2img(**on_base(), refiner=ours(FORGE_REFINER, 50))
    assert len({pixels(base_only)[0], pixels(fine_tune)[0], pixels(refined)[0]}) == 3
    assert "SDXL Refiner split: base 4 / refiner 4" in infotext(fine_tune)


def test_a_refiner_with_its_own_text_encoder_encodes_with_it_as_the_hosts_own_refiner_does(forge_api, family):
    base_only = forge_api.txt2img(**on_base())
    sliced = forge_api.txt2img(**on_base(), refiner=ours(FORGE_REFINER, 50))
    own = forge_api.txt2img(**on_base(), refiner=ours(FORGE_REFINER_OWN_TEXT, 50))
    after = forge_api.txt2img(**on_base())
    assert pixels(own) != pixels(sliced)
    if family.builtin_refiner == FORGE_REFINER:
        # the built-in refiner loads the whole file and encodes the prompts again with the refiner's bigG
        assert pixels(own) == pixels(builtin_refined(forge_api, family, FORGE_REFINER_OWN_TEXT))
    else:  # Neo's built-in refiner cannot run a refiner-type file: the same request twice is the oracle left
        assert pixels(forge_api.txt2img(**on_base(), refiner=ours(FORGE_REFINER_OWN_TEXT, 50))) == pixels(own)
    assert "prompts encoded with the refiner's own text encoder" in infotext(own)
    assert pixels(after) == pixels(base_only)


@pytest.mark.parametrize("refiner", [FORGE_REFINER, FORGE_REFINER_OWN_TEXT], ids=["sliced", "own text encoder"])
def test_a_refiner_prompt_equal_to_the_main_one_changes_nothing_and_another_one_changes_the_image(forge_api, refiner):
    fields = on_base(prompt="a red fox in the snow", negative_prompt="blurry")
    plain = forge_api.txt2img(**fields, refiner=ours(refiner, 50))
    same = forge_api.txt2img(**fields, refiner=ours(refiner, 50, prompt="a red fox in the snow", negative_prompt="blurry"))
    other = forge_api.txt2img(**fields, refiner=ours(refiner, 50, prompt="film grain, pores"))
    assert pixels(same) == pixels(plain)
    assert pixels(other) != pixels(plain)
    assert 'SDXL Refiner prompt: "film grain, pores"' in infotext(other)


def test_unloading_the_refiner_gives_its_memory_back_and_the_next_image_loads_it_again(forge_api, forge_host):
    if forge_host.resident_bytes() is None:
        pytest.skip("the memory of a Forge started by hand is not read")
    forge_api.call("/sdxl-refiner/v1/unload", {})  # a refiner an earlier test left cached would not be loaded again
    base_only = forge_api.txt2img(**on_base())
    before = forge_host.resident_bytes()
    refined = forge_api.txt2img(**on_base(), refiner=ours(FORGE_REFINER, 50))
    loaded = forge_host.resident_bytes()
    assert forge_api.call("/sdxl-refiner/v1/unload", {}) == {"unloaded": True, "refiners": [FORGE_REFINER]}
    unloaded = forge_host.resident_bytes()
    # the refiner's UNet is what the refined image added; at least half of it must go
    assert loaded - unloaded > (loaded - before) / 2 > 100 * 2**20, (before, loaded, unloaded)
    assert pixels(forge_api.txt2img(**on_base())) == pixels(base_only)
    assert pixels(forge_api.txt2img(**on_base(), refiner=ours(FORGE_REFINER, 50))) == pixels(refined)


def test_no_checkpoint_is_loaded_at_the_switch_or_for_the_next_image(forge_api, forge_console):
    forge_api.txt2img(**on_base(), refiner=ours(FORGE_REFINER, 50))
    before = forge_console()
    forge_api.txt2img(**on_base(seed=7), refiner=ours(FORGE_REFINER, 50))
    forge_api.txt2img(**on_base(seed=7))
    added = forge_console()[len(before):]
    assert not [line for line in added.splitlines() if line.startswith(RELOAD_LINES)], added


def test_with_both_refiners_on_ours_runs_and_the_hosts_is_turned_off(forge_api, family):
    both = forge_api.txt2img(**on_base(refiner_checkpoint=FORGE_REFINER, refiner_switch_at=0.5),
                             refiner=ours(FORGE_REFINER, 25))
    only_ours = forge_api.txt2img(**on_base(), refiner=ours(FORGE_REFINER, 25))
    assert pixels(both) == pixels(only_ours)
    assert builtin_off_note(family.host_name) in infotext(both)


def test_img2img_with_the_copy_is_identity_and_the_refiner_runs_its_share(forge_api):
    fields = on_base(init_images=[small_png()], denoising_strength=0.5, steps=10)
    forge_api.img2img(**fields)
    base_only = forge_api.img2img(**fields)
    copy = forge_api.img2img(**fields, refiner=ours(FORGE_BASE_COPY, 50))
    refined = forge_api.img2img(**fields, refiner=ours(FORGE_REFINER, 50))
    assert pixels(copy) == pixels(base_only)
    assert pixels(refined) != pixels(base_only)
    assert "SDXL Refiner split: base 3 / refiner 3" in infotext(refined)


HIRES = {"enable_hr": True, "hr_scale": 2, "hr_second_pass_steps": 4, "denoising_strength": 0.5,
         "hr_additional_modules": ["Use same choices"]}


@pytest.mark.parametrize("hr_cfg", [1.0, 5.0], ids=["hires CFG 1: no uncond", "hires CFG 5"])
def test_hires_fix_keeps_the_copy_identity_and_refines_both_passes(forge_api, family, hr_cfg):
    fields = on_base(**HIRES, hr_upscaler=family.hires_upscaler, hr_cfg=hr_cfg)
    base_only = forge_api.txt2img(**fields)
    copy = forge_api.txt2img(**fields, refiner=ours(FORGE_BASE_COPY, 50, hires_pass="both"))
    refined = forge_api.txt2img(**fields, refiner=ours(FORGE_REFINER, 50, hires_pass="both"))
    assert pixels(copy) == pixels(base_only)
    assert pixels(refined) != pixels(base_only)
    text = infotext(refined)
    assert "SDXL Refiner split: base 4 / refiner 4" in text and "SDXL Refiner hires split: base 2 / refiner 2" in text


def test_batch_size_two_by_count_two(forge_api):
    fields = on_base(prompt="a red fox AND a snowy forest :0.6", batch_size=2, n_iter=2)
    base_only = forge_api.txt2img(**fields)
    copy = forge_api.txt2img(**fields, refiner=ours(FORGE_BASE_COPY, 50))
    refined = forge_api.txt2img(**fields, refiner=ours(FORGE_REFINER, 50))
    assert pixels(copy) == pixels(base_only)
    assert all(a != b for a, b in zip(pixels(refined), pixels(base_only), strict=True))
    texts = json.loads(refined["info"])["infotexts"]
    assert len(texts) == 4 and all("SDXL Refiner split: base 4 / refiner 4" in text for text in texts)


def test_the_infotext_reads_back_through_png_info(forge_api):
    refined = forge_api.txt2img(**on_base(), refiner=ours(FORGE_REFINER, 25, aesthetic_score=7.0))
    read = forge_api.png_info(refined)
    assert read["parameters"]["SDXL Refiner steps"] == "25%"
    assert FORGE_REFINER.removesuffix(".safetensors") in read["parameters"]["SDXL Refiner"]


def test_an_xyz_plot_over_the_refiner_share_gives_the_cells_of_single_generations(forge_api, family):
    shares = [0, 50]
    args = [forge_api.xyz_axis("SDXL Refiner steps %"), ", ".join(map(str, shares)), [], 0, "", [], 0, "", [],
            *family.xyz_options]
    grid = forge_api.txt2img(**on_base(script_name="x/y/z plot", script_args=args), refiner=ours(FORGE_REFINER, 20))
    cells = pixels(grid)[1:]  # the grid itself comes first, then each cell
    singles = [pixels(forge_api.txt2img(**on_base(), refiner=ours(FORGE_REFINER, share)))[0] for share in shares]
    assert cells == singles
    assert singles[0] == pixels(forge_api.txt2img(**on_base()))[0], "0 % in the axis is the refiner off"


def test_interrupted_after_the_switch_then_clean_generations_equal_earlier_ones(forge_api):
    earlier_base = forge_api.txt2img(**on_base())
    earlier_refined = forge_api.txt2img(**on_base(), refiner=ours(FORGE_REFINER, 30))
    reached = stopped_at(forge_api, lambda: forge_api.txt2img(
        **on_base(steps=60, n_iter=2), refiner=ours(FORGE_REFINER, 50)), 35)
    assert reached >= 35, "the interrupt did not come after the switch (step 30 of 60): make the request longer"
    assert pixels(forge_api.txt2img(**on_base(), refiner=ours(FORGE_REFINER, 30))) == pixels(earlier_refined)
    assert pixels(forge_api.txt2img(**on_base())) == pixels(earlier_base)
