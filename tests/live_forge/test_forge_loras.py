"""The refiner's LoRAs in a real Forge 2 or Forge Neo, through its ``sd_forge_lora`` loader (``lora_oracles``)."""

from __future__ import annotations

import pytest

from tests.live import lora_oracles as oracles
from tests.live.webui_api import FORGE_BASE, FORGE_BASE_COPY, FORGE_REFINER

pytestmark = pytest.mark.live

MODELS = oracles.Models(
    base_copy=FORGE_BASE_COPY, refiner=FORGE_REFINER,
    fields={"override_settings": {"sd_model_checkpoint": FORGE_BASE}, "width": 64, "height": 64, "steps": 8},
)


@pytest.mark.parametrize("lora", [oracles.LORA_UNET, oracles.LORA_TE])
def test_a_copy_with_a_refiner_lora_gives_the_base_with_it_in_the_main_prompt(forge_api, lora):
    oracles.copy_with_a_refiner_lora_gives_the_base_with_it_in_the_main_prompt(forge_api, MODELS, lora)


def test_the_refiner_prompts_text_and_its_lora_together(forge_api):
    oracles.refiner_prompt_text_and_lora_together(forge_api, MODELS, oracles.LORA_TE)


def test_same_puts_the_main_prompts_loras_on_the_refiner(forge_api):
    oracles.same_gives_the_base_its_loras_on_the_refiner(forge_api, MODELS, oracles.LORA_TE)


def test_a_lora_on_the_base_stays_off_a_refiner_without_loras(forge_api):
    oracles.a_base_lora_stays_off_a_refiner_without_loras(forge_api, MODELS, oracles.LORA_TE)


def test_the_steps_before_the_switch_are_unchanged_by_a_refiner_lora(forge_api):
    oracles.the_steps_before_the_switch_are_unchanged_by_a_refiner_lora(forge_api, MODELS, oracles.LORA_TE)


def test_changing_the_set_between_images_keeps_each_image_as_made_alone(forge_api, forge_host):
    install = forge_host.install
    checkpoints = install.webui / "models" / "Stable-diffusion" if install else None
    oracles.changing_the_set_between_images_keeps_every_image_as_made_alone(
        forge_api, MODELS, forge_host.bytes_read, checkpoints)


def test_a_refiner_type_refiner_takes_a_lora_of_its_layout_and_notes_one_of_another(forge_api):
    oracles.a_refiner_type_refiner_takes_a_lora_of_its_layout_and_notes_one_of_another(forge_api, MODELS)


def test_paste_restores_the_tags_and_the_choice(forge_api):
    oracles.paste_restores_the_tags_and_the_choice(forge_api, MODELS, regenerate=False)


def test_unknown_names_bad_weights_and_other_network_types_are_refused(forge_api):
    oracles.refusals(forge_api, MODELS)


def test_an_interrupt_during_the_refiners_lora_steps_leaves_both_models_clean(forge_api):
    oracles.an_interrupt_during_the_refiners_lora_steps_leaves_both_models_clean(forge_api, MODELS)


def test_an_xyz_prompt_sr_over_the_refiner_prompt_gives_the_cells_of_single_generations(forge_api, family):
    oracles.an_xyz_prompt_sr_over_the_refiner_prompt_gives_the_cells_of_single_generations(
        forge_api, MODELS, family.xyz_options)
