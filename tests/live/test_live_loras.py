"""The refiner's LoRAs in a real WebUI 1.10.1, through its built-in Lora extension (``lora_oracles``)."""

from __future__ import annotations

import pytest

from tests.live import lora_oracles as oracles
from tests.live.webui_api import BASE_COPY, REFINER

pytestmark = pytest.mark.live

MODELS = oracles.Models(base_copy=BASE_COPY, refiner=REFINER)


@pytest.mark.parametrize("lora", [oracles.LORA_UNET, oracles.LORA_TE])
def test_a_copy_with_a_refiner_lora_gives_the_base_with_it_in_the_main_prompt(api, lora):
    oracles.copy_with_a_refiner_lora_gives_the_base_with_it_in_the_main_prompt(api, MODELS, lora)


def test_the_refiner_prompts_text_and_its_lora_together(api):
    oracles.refiner_prompt_text_and_lora_together(api, MODELS, oracles.LORA_TE)


def test_same_puts_the_main_prompts_loras_on_the_refiner(api):
    oracles.same_gives_the_base_its_loras_on_the_refiner(api, MODELS, oracles.LORA_TE)


def test_a_lora_on_the_base_stays_off_a_refiner_without_loras(api):
    oracles.a_base_lora_stays_off_a_refiner_without_loras(api, MODELS, oracles.LORA_TE)


def test_the_steps_before_the_switch_are_unchanged_by_a_refiner_lora(api):
    oracles.the_steps_before_the_switch_are_unchanged_by_a_refiner_lora(api, MODELS, oracles.LORA_TE)


def test_changing_the_set_between_images_keeps_each_image_as_made_alone(api, hosts):
    checkpoints = hosts.install.webui / "models" / "Stable-diffusion" if hosts.install else None
    oracles.changing_the_set_between_images_keeps_every_image_as_made_alone(api, MODELS, hosts.bytes_read, checkpoints)


def test_a_refiner_type_refiner_takes_a_lora_of_its_layout_and_notes_one_of_another(api):
    oracles.a_refiner_type_refiner_takes_a_lora_of_its_layout_and_notes_one_of_another(api, MODELS)


def test_paste_restores_the_tags_and_the_choice(api):
    oracles.paste_restores_the_tags_and_the_choice(api, MODELS)


def test_unknown_names_bad_weights_and_other_network_types_are_refused(api):
    oracles.refusals(api, MODELS)


def test_an_interrupt_during_the_refiners_lora_steps_leaves_both_models_clean(api):
    oracles.an_interrupt_during_the_refiners_lora_steps_leaves_both_models_clean(api, MODELS)


def test_an_xyz_prompt_sr_over_the_refiner_prompt_gives_the_cells_of_single_generations(api):
    options = (True, True, False, False, False, False, False, 0, False)
    oracles.an_xyz_prompt_sr_over_the_refiner_prompt_gives_the_cells_of_single_generations(api, MODELS, options)
