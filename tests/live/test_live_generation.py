"""The generation paths of a real WebUI 1.10.1, each checked on decoded pixels and on the infotext.

The oracle throughout is a byte copy of the base chosen as the refiner: whatever the path
(img2img, a mask, hires fix, batches, AND prompts, extra networks), the copy must give the
base-only pixels, and the real refiner must change them while saying what it did.
"""

from __future__ import annotations

import base64
import io
import json

import pytest

from sdxl_refiner.host.sampling import builtin_off_note
from tests.live.webui_api import (
    BASE_COPY,
    REFINER,
    infotext,
    ours,
    pixels,
    small_png,
    stopped_at,
)

BUILTIN_OFF_NOTE = builtin_off_note("the WebUI")

pytestmark = pytest.mark.live


def mask_png(width: int = 64, height: int = 64) -> str:
    """White (repaint) on the right half, black (keep) on the left."""
    from PIL import Image

    image = Image.new("L", (width, height))
    image.putdata([255 if x >= width // 2 else 0 for _y in range(height) for x in range(width)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def assert_copy_is_identity_and_refiner_changes(generate, **fields) -> dict:
    """The base-only, base-copy and refined runs of one request; returns the refined response.

    img2img encodes its input with the global RNG before the WebUI seeds it, so the first img2img
    after a start differs from every later one: a first request takes that state away. The last
    base-only run checks the other side of it: loading the refiners mid-request drew nothing from
    that RNG, or the next img2img would differ."""
    generate(**fields)
    base_only = generate(**fields)
    copy = generate(**fields, refiner=ours(BASE_COPY, 50))
    refined = generate(**fields, refiner=ours(REFINER, 50))
    assert pixels(copy) == pixels(base_only)
    changed = [a != b for a, b in zip(pixels(refined), pixels(base_only), strict=True)]
    assert all(changed), f"the refiner left images {[i for i, c in enumerate(changed) if not c]} unchanged"
    assert pixels(generate(**fields)) == pixels(base_only)
    return refined


def test_img2img_with_a_copy_of_the_base_is_identity_and_the_refiner_runs_its_share(api):
    refined = assert_copy_is_identity_and_refiner_changes(
        api.img2img, init_images=[small_png()], denoising_strength=0.5, steps=10)
    # img2img runs int(0.5 · 10) + 1 = 6 of the 10 steps: the refiner takes half of those
    assert "SDXL Refiner split: base 3 / refiner 3" in infotext(refined)


def test_img2img_inpainting_with_a_mask_keeps_the_copy_identity_and_refines_the_masked_part(api):
    refined = assert_copy_is_identity_and_refiner_changes(
        api.img2img, init_images=[small_png()], mask=mask_png(), denoising_strength=0.75,
        inpainting_fill=1, inpaint_full_res=False, mask_blur=0)
    # int(0.75 · 8) + 1 = 7 steps run; half of 7 rounds up to 4
    assert "SDXL Refiner split: base 3 / refiner 4" in infotext(refined)


HIRES = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 4,
         "denoising_strength": 0.5}


@pytest.mark.parametrize("hires_pass", ["first", "second", "both", "default"])
def test_hires_fix_with_each_pass_choice_keeps_the_copy_identity(api, hires_pass):
    base_only = api.txt2img(**HIRES)
    copy = api.txt2img(**HIRES, refiner=ours(BASE_COPY, 50, hires_pass=hires_pass))
    assert pixels(copy) == pixels(base_only)


def test_hires_fix_pass_choices_refine_the_passes_they_name_and_say_which(api):
    texts, images = {}, {}
    for hires_pass in ("first", "second", "both"):
        response = api.txt2img(**HIRES, refiner=ours(REFINER, 50, hires_pass=hires_pass))
        texts[hires_pass], images[hires_pass] = infotext(response), pixels(response)
    # the hires pass asks for 4 steps at strength 0.5: the WebUI then runs exactly 4 (of a schedule of 8)
    first_split, hires_split = "SDXL Refiner split: base 4 / refiner 4", "SDXL Refiner hires split: base 2 / refiner 2"
    assert first_split in texts["first"] and "hires split" not in texts["first"]
    assert hires_split in texts["second"] and first_split not in texts["second"]
    assert first_split in texts["both"] and hires_split in texts["both"]
    assert len({b"".join(image) for image in images.values()}) == 3, "each choice refines other steps"


def test_batch_size_two_by_count_two_with_an_and_prompt(api):
    fields = {"prompt": "a red fox AND a snowy forest :0.6", "batch_size": 2, "n_iter": 2}
    refined = assert_copy_is_identity_and_refiner_changes(api.txt2img, **fields)
    texts = json.loads(refined["info"])["infotexts"]
    assert len(texts) == 4 and all("SDXL Refiner split: base 4 / refiner 4" in text for text in texts)


def test_with_both_refiners_on_ours_runs_and_the_builtin_is_turned_off(api):
    both = api.txt2img(refiner_checkpoint=REFINER, refiner_switch_at=0.5, refiner=ours(REFINER, 25))
    only_ours = api.txt2img(refiner=ours(REFINER, 25))
    assert pixels(both) == pixels(only_ours)
    assert BUILTIN_OFF_NOTE in infotext(both)
    assert "Refiner: " not in infotext(both).replace("SDXL Refiner: ", "")


def test_a_lora_on_the_base_stays_off_the_refiner_and_off_later_generations(api):
    plain = api.txt2img()
    with_lora = api.txt2img(prompt="a red fox in the snow <lora:tiny-sdxl-lora:1>")
    assert pixels(with_lora) != pixels(plain), "the LoRA must change the base's image for this test to mean anything"
    copy_with_lora = api.txt2img(prompt="a red fox in the snow <lora:tiny-sdxl-lora:1>", refiner=ours(BASE_COPY, 50))
    # the copy's steps run without the LoRA: neither the LoRA image nor the plain one
    assert pixels(copy_with_lora) != pixels(with_lora)
    assert pixels(copy_with_lora) != pixels(plain)
    assert pixels(api.txt2img()) == pixels(plain), "the LoRA must be gone from the base afterwards"


def test_a_textual_inversion_in_the_prompt_keeps_the_copy_identity(api):
    prompt = "a tiny-sdxl-ti fox in the snow"
    with_embedding = api.txt2img(prompt=prompt)
    assert pixels(with_embedding) != pixels(api.txt2img(prompt="a fox in the snow"))
    assert "tiny-sdxl-ti" in infotext(with_embedding), "the WebUI lists the embedding it used"
    assert pixels(api.txt2img(prompt=prompt, refiner=ours(BASE_COPY, 50))) == pixels(with_embedding)


def test_png_info_reads_our_keys_back_from_a_refined_image(api):
    refined = api.txt2img(refiner=ours(REFINER, 25, aesthetic_score=7.5))
    parameters = api.png_info(refined)["parameters"]
    assert parameters["SDXL Refiner"].startswith(REFINER.removesuffix(".safetensors"))
    assert parameters["SDXL Refiner steps"] == "25%"
    assert parameters["SDXL Refiner split"] == "base 6 / refiner 2"
    assert parameters["SDXL Refiner aesthetic score"] == "7.5"


def test_an_xyz_plot_over_the_steps_share_gives_the_cells_of_single_generations(api):
    shares = [0, 25, 50]
    args = [api.xyz_axis("SDXL Refiner steps %"), ", ".join(map(str, shares)), [], 0, "", [], 0, "", [],
            True, True, False, False, False, False, False, 0, False]
    grid = api.txt2img(script_name="x/y/z plot", script_args=args, refiner=ours(REFINER, 20))
    cells = pixels(grid)[1:]  # the grid itself comes first, then each cell
    singles = [pixels(api.txt2img(refiner=ours(REFINER, share)))[0] for share in shares]
    assert cells == singles
    assert singles[0] == pixels(api.txt2img())[0], "0 % in the axis is the refiner off"


@pytest.mark.parametrize("stop", ["interrupt", "skip"])
def test_stopped_after_the_switch_then_clean_generations_equal_earlier_ones(api, stop):
    """Interrupt or skip while the refiner runs: the request still answers, and the base and the
    refiner both give the images they gave before."""
    earlier_base, earlier_refined = api.txt2img(), api.txt2img(refiner=ours(REFINER, 30))
    # a count of 2: skip ends the first image only, and the interrupt after it ends the rest
    long_request = {"steps": 150, "width": 256, "height": 256, "n_iter": 2, "refiner": ours(REFINER, 50)}
    reached = stopped_at(api, lambda: api.txt2img(**long_request), 80, stop)
    assert reached >= 80, f"the {stop} did not come after the switch (step 75 of 150): make the request longer"
    assert pixels(api.txt2img(refiner=ours(REFINER, 30))) == pixels(earlier_refined)
    assert pixels(api.txt2img()) == pixels(earlier_base)
