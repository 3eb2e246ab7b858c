"""The refiner's LoRAs against the host's own LoRA support, the same checks in every host.

The oracle is the host itself: a LoRA written in the main prompt of a base-only generation. A
byte copy of the base as the refiner, running every step (100 %), with the LoRA in the refiner
prompt, must give that image bit for bit, text-encoder weights included; and the base must be
untouched afterwards. The tiny LoRA files are made by ``make_tiny_loras.py`` for each host's
checkpoints (``host.py`` writes them with the checkpoints).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.live.webui_api import ApiError, WebUIApi, infotext, ours, pixels, stopped_at

LORA_UNET = "refiner-test-unet"
LORA_TE = "refiner-test-te"
LORA_REFINER_LAYOUT = "refiner-test-refiner-unet"
TRACE_SCRIPT_KEY = "sdxl refiner trace"
PROMPT = "a red fox in the snow"


def tag(name: str, weight: float = 0.8) -> str:
    return f"<lora:{name}:{weight}>"


@dataclass(frozen=True)
class Models:
    """One host's checkpoints and the fields of a small generation on its base."""

    base_copy: str
    refiner: str
    fields: dict = field(default_factory=dict)

    def generate(self, api: WebUIApi, prompt: str = PROMPT, **more) -> dict:
        return api.txt2img(**{**self.fields, "prompt": prompt, **more})


def trace(response: dict) -> list[str]:
    """The trace extension's digests of the latent at each model call, in order."""
    text = infotext(response)
    found = text.split("Trace: ", 1)[1].split(",", 1)[0].strip().strip('"')
    return found.split()


def traced(models: Models, api: WebUIApi, **more) -> dict:
    return models.generate(api, alwayson_scripts={TRACE_SCRIPT_KEY: {"args": ["trace"]}}, **more)


def copy_with_a_refiner_lora_gives_the_base_with_it_in_the_main_prompt(api: WebUIApi, models: Models,
                                                                        lora: str) -> None:
    plain = models.generate(api)
    with_lora = models.generate(api, f"{PROMPT} {tag(lora)}")
    assert pixels(with_lora) != pixels(plain), "the LoRA must change the image for the check to mean anything"
    refined = models.generate(api, refiner=ours(models.base_copy, 100, prompt=tag(lora)))
    assert pixels(refined) == pixels(with_lora)
    written = infotext(refined)
    assert f"SDXL Refiner Lora hashes: \"{lora}: " in written or f"SDXL Refiner Lora hashes: {lora}: " in written, written
    assert f"SDXL Refiner prompt: \"{tag(lora)}\"" in written or f"SDXL Refiner prompt: {tag(lora)}" in written
    assert pixels(models.generate(api)) == pixels(plain), "the base must be untouched afterwards"


def refiner_prompt_text_and_lora_together(api: WebUIApi, models: Models, lora: str) -> None:
    """The text of a refiner prompt with tags is the refiner's prompt; the tags are not text."""
    with_lora = models.generate(api, f"a fox in the grass {tag(lora)}")
    refined = models.generate(api, refiner=ours(models.base_copy, 100, prompt=f"a fox {tag(lora)}in the grass"))
    assert pixels(refined) == pixels(with_lora)


def same_gives_the_base_its_loras_on_the_refiner(api: WebUIApi, models: Models, lora: str) -> None:
    with_lora = models.generate(api, f"{PROMPT} {tag(lora)}")
    same = models.generate(api, f"{PROMPT} {tag(lora)}", refiner=ours(models.base_copy, 50, base_loras="same"))
    assert pixels(same) == pixels(with_lora)
    assert "SDXL Refiner base LoRAs: same" in infotext(same)
    none = models.generate(api, f"{PROMPT} {tag(lora)}", refiner=ours(models.base_copy, 50))
    assert pixels(none) != pixels(with_lora), "with none the refiner's steps run without the base's LoRA"


def a_base_lora_stays_off_a_refiner_without_loras(api: WebUIApi, models: Models, lora: str) -> None:
    """At 100 % the refiner runs every step: without the base's LoRA (UNet and text encoder alike)
    the image is the one of a base without it."""
    plain = models.generate(api)
    refined = models.generate(api, f"{PROMPT} {tag(lora)}", refiner=ours(models.base_copy, 100))
    assert pixels(refined) == pixels(plain)


def the_steps_before_the_switch_are_unchanged_by_a_refiner_lora(api: WebUIApi, models: Models, lora: str,
                                                                 refiner: str | None = None) -> None:
    refiner = refiner or models.base_copy
    without = trace(traced(models, api, refiner=ours(refiner, 25)))
    with_lora = trace(traced(models, api, refiner=ours(refiner, 25, prompt=tag(lora))))
    steps = len(without)
    base_calls = steps - steps // 4  # 8 steps at 25 %: base 6, refiner 2; the 7th call's input is the base's
    assert len(with_lora) == steps
    assert with_lora[:base_calls + 1] == without[:base_calls + 1]
    assert with_lora[base_calls + 1:] != without[base_calls + 1:]


def changing_the_set_between_images_keeps_every_image_as_made_alone(
    api: WebUIApi, models: Models, bytes_read: Callable[[], int | None], checkpoints: Path | None,
) -> None:
    """Sets change, come back and go: each image is the one its set gives, the base is untouched,
    and the refiner file is not read again (the host process reads less than its size meanwhile)."""
    plain = models.generate(api)
    models.generate(api, refiner=ours(models.base_copy, 50))
    before = bytes_read()
    sets = [tag(LORA_UNET), tag(LORA_TE, 0.5), f"{tag(LORA_UNET, 0.3)} {tag(LORA_TE, -0.4)}", ""]
    first = [pixels(models.generate(api, refiner=ours(models.base_copy, 50, prompt=text))) for text in sets]
    assert len(set(map(tuple, first))) == len(sets), "each set must give its own image"
    again = [pixels(models.generate(api, refiner=ours(models.base_copy, 50, prompt=text))) for text in reversed(sets)]
    assert again == list(reversed(first))
    after = bytes_read()
    if before is not None and after is not None and checkpoints is not None:
        size = (checkpoints / models.base_copy).stat().st_size
        assert after - before < size, f"{after - before} bytes read, the refiner file has {size}"
    assert pixels(models.generate(api)) == pixels(plain)


def a_refiner_type_refiner_takes_a_lora_of_its_layout_and_notes_one_of_another(api: WebUIApi,
                                                                                models: Models) -> None:
    plain = models.generate(api, refiner=ours(models.refiner, 50))
    own_layout = models.generate(api, refiner=ours(models.refiner, 50, prompt=tag(LORA_REFINER_LAYOUT)))
    assert pixels(own_layout) != pixels(plain)
    assert f"LoRA {LORA_REFINER_LAYOUT}" not in infotext(own_layout)
    base_layout = models.generate(api, refiner=ours(models.refiner, 50, prompt=tag(LORA_UNET)))
    assert f"LoRA {LORA_UNET}" in infotext(base_layout), infotext(base_layout)
    assert pixels(models.generate(api, refiner=ours(models.refiner, 50))) == pixels(plain)


def paste_restores_the_tags_and_the_choice(api: WebUIApi, models: Models, regenerate: bool = True) -> None:
    """The keys read back as written; ``regenerate``: the API's ``infotext`` field makes the image
    again (the API of Forge 2 and Neo fails on its own fields there: ``isinstance`` of a parameterized type)."""
    refined = models.generate(api, f"{PROMPT} {tag(LORA_UNET, 0.5)}",
                              refiner=ours(models.base_copy, 50, prompt=f"grain {tag(LORA_TE)}", base_loras="same"))
    parameters = api.png_info(refined)["parameters"]
    assert parameters["SDXL Refiner prompt"] == f"grain {tag(LORA_TE)}"
    assert parameters["SDXL Refiner base LoRAs"] == "same"
    assert parameters["SDXL Refiner Lora hashes"].startswith(f"{LORA_UNET}: ")
    if not regenerate:
        return
    again = models.generate(api, f"{PROMPT} {tag(LORA_UNET, 0.5)}", infotext=infotext(refined))
    assert pixels(again) == pixels(refined)


def refusals(api: WebUIApi, models: Models) -> None:
    for prompt, status, words in [
        (f"grain {tag('no-such-lora')}", 404, "names the LoRA 'no-such-lora', which is not in the host's LoRA list"),
        ("<lora:refiner-test-unet:strong>", 422, "its text-encoder weight 'strong' is not a number"),
        ("<hypernet:grain:1>", 422, "not the extra network type 'hypernet'"),
    ]:
        try:
            models.generate(api, refiner=ours(models.base_copy, 50, prompt=prompt))
        except ApiError as error:
            assert error.status == status, error.body
            assert words in error.body, error.body
        else:
            raise AssertionError(f"{prompt!r} was not refused")


def an_interrupt_during_the_refiners_lora_steps_leaves_both_models_clean(api: WebUIApi, models: Models) -> None:
    """Interrupted while the refiner runs with its LoRAs (and the base with its own): the request
    answers, and the base and the refiner then give the images they gave before."""
    base_lora = f"{PROMPT} {tag(LORA_UNET, 0.6)}"

    def clean_images() -> list:
        return [pixels(models.generate(api)), pixels(models.generate(api, base_lora)),
                pixels(models.generate(api, refiner=ours(models.base_copy, 50)))]

    earlier = clean_images()
    reached = stopped_at(api, lambda: models.generate(
        api, base_lora, steps=60, refiner=ours(models.base_copy, 50, prompt=tag(LORA_TE))), 40)
    assert reached >= 40, "the interrupt did not come after the switch (step 30 of 60): make the request longer"
    assert clean_images() == earlier


def an_xyz_prompt_sr_over_the_refiner_prompt_gives_the_cells_of_single_generations(
    api: WebUIApi, models: Models, xyz_options: tuple,
) -> None:
    """Our S/R axis over a LoRA's weight in the refiner prompt, as the host's Prompt S/R over the main one."""
    values = [tag(LORA_UNET, 0.2), tag(LORA_UNET, 0.9), ""]
    args = [api.xyz_axis("SDXL Refiner prompt S/R"), ", ".join(values), [], 0, "", [], 0, "", [], *xyz_options]
    grid = models.generate(api, script_name="x/y/z plot", script_args=args,
                           refiner=ours(models.base_copy, 50, prompt=f"grain {values[0]}"))
    singles = [pixels(models.generate(api, refiner=ours(models.base_copy, 50, prompt=f"grain {value}")))[0]
               for value in values]
    assert pixels(grid)[1:] == singles
    assert len(set(singles)) == len(values)
