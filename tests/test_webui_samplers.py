"""The sigmas of a pass, read from the sampler's own arguments, as the switch is placed on them."""

from __future__ import annotations

import pytest
import torch

from sdxl_refiner.core.errors import PlanError
from sdxl_refiner.core.samplers import (
    function_name,
    refuse_unsupported,
    sampler_label,
    sigmas_used,
    switch_point_for,
)
from sdxl_refiner.core.schedule import switch_point

SCHEDULE = torch.tensor([14.6, 9.0, 4.0, 1.5, 0.5, 0.0])


@pytest.mark.parametrize("name", ["sigmas", "timesteps"])
def test_given_sigmas_or_timesteps_are_the_pass_whatever_the_schedule(name):
    given = torch.tensor([4.0, 1.5, 0.0])
    assert torch.equal(sigmas_used({name: given}, None), given)


def test_without_sigma_max_dpm_fast_and_adaptive_run_the_whole_schedule():
    assert torch.equal(sigmas_used({}, SCHEDULE), SCHEDULE)


def test_with_sigma_max_the_pass_is_the_schedules_tail_from_it_down():
    assert torch.equal(sigmas_used({"sigma_max": torch.tensor(4.0)}, SCHEDULE), SCHEDULE[2:])
    assert torch.equal(sigmas_used({"sigma_max": 4.0 * (1 + 5e-5)}, SCHEDULE), SCHEDULE[2:])


def test_an_unseen_schedule_is_refused_with_what_could_not_be_done():
    with pytest.raises(PlanError) as refused:
        sigmas_used({"sigma_max": 4.0}, None)
    assert str(refused.value) == (
        "The sampler's sigma schedule was not seen before sampling; cannot place the switch."
    )


def webui_sampler(**attributes):
    """A sampler object as the WebUI hands it over: ``funcname``, and ``config`` for a listed one."""
    return type("KDiffusionSampler", (), attributes)()


def listed_as(label: str):
    """The WebUI's SamplerData for a sampler in its list: the label is its ``name``."""
    return type("SamplerData", (), {"name": label})()


def test_a_sampler_is_named_by_its_k_diffusion_function_or_its_own_callable():
    def restart_sampler():
        pass

    assert function_name(webui_sampler(funcname="sample_euler")) == "sample_euler"
    assert function_name(webui_sampler(funcname=restart_sampler)) == "restart_sampler"
    assert function_name(webui_sampler()) == "KDiffusionSampler"


def test_a_sampler_is_labelled_as_the_webui_lists_it_else_by_its_function():
    assert sampler_label(webui_sampler(funcname="sample_dpmpp_2m", config=listed_as("DPM++ 2M"))) == "DPM++ 2M"
    assert sampler_label(webui_sampler(funcname="sample_euler", config=object())) == "sample_euler"
    assert sampler_label(webui_sampler(funcname="sample_heun")) == "sample_heun"


@pytest.mark.parametrize(
    ("name", "calls_before_last_step"),
    [("plms", 5), ("ddim", 4), ("sample_lcm", 4), ("sample_ipndm", 4), ("sample_ipndm_v", 4), ("sample_deis", 4),
     ("sample_ddpm", 4)],
)
def test_timestep_and_lcm_samplers_switch_after_every_call_of_the_base_steps(name, calls_before_last_step):
    sampler, steps = webui_sampler(funcname=name), len(SCHEDULE) - 1
    assert switch_point_for(sampler, SCHEDULE, steps - 1, 1.0).call_index == calls_before_last_step
    assert switch_point_for(sampler, SCHEDULE, steps, 1.0).never
    with pytest.raises(PlanError, match=f"base steps {steps + 1} is outside 0..{steps}"):
        switch_point_for(sampler, SCHEDULE, steps + 1, 1.0)


def test_a_sigma_max_just_below_a_schedule_sigma_starts_the_pass_there():
    schedule = torch.tensor([8.0, 5.0, 4.5, 4.0, 1.0, 0.0])
    assert torch.equal(sigmas_used({"sigma_max": 4.5}, schedule), schedule[2:])
    assert torch.equal(sigmas_used({"sigma_max": 4.5 / (1 + 5e-5)}, schedule), schedule[2:])


def test_lcm_checks_the_sigma_of_its_switch_and_ddim_whose_steps_are_timesteps_does_not():
    assert switch_point_for(webui_sampler(funcname="sample_lcm"), SCHEDULE, 3, 1.0).expected_sigma == pytest.approx(1.5)
    assert switch_point_for(webui_sampler(funcname="ddim"), SCHEDULE, 3, 1.0).expected_sigma is None


def test_the_generations_eta_counts_the_calls_of_ancestral_second_order_samplers():
    sampler = webui_sampler(funcname="sample_dpm_2_ancestral")
    assert switch_point_for(sampler, SCHEDULE, 4, 2.0) == switch_point("dpm_2_ancestral", SCHEDULE, 4, eta=2.0)
    assert switch_point_for(sampler, SCHEDULE, 4, 2.0) != switch_point_for(sampler, SCHEDULE, 4, 1.0)


def test_a_sampler_stepping_through_timesteps_is_refused_with_the_samplers_to_pick():
    def sample_unipc(model, x, timesteps, extra_args=None):
        return x

    with pytest.raises(PlanError) as caught:
        refuse_unsupported(webui_sampler(funcname="unipc", config=listed_as("UniPC")), sample_unipc)
    assert str(caught.value) == (
        "Sampler 'UniPC' steps through timesteps, not sigmas, and its model calls per step are not ones the SDXL "
        "Refiner can place its switch between. Pick Euler, Euler a, DPM++ 2M, DPM++ 2M SDE, DPM++ SDE, Heun or "
        "LMS, DDIM or PLMS, or turn SDXL Refiner off."
    )


def sample_heunpp2(model, x, sigmas, extra_args=None):
    return x


@pytest.mark.parametrize("funcname", ["sample_heunpp2", sample_heunpp2])
def test_a_sampler_whose_calls_per_step_are_not_known_is_refused_by_its_label(funcname):
    with pytest.raises(PlanError) as caught:
        refuse_unsupported(webui_sampler(funcname=funcname, config=listed_as("HeunPP2")), sample_heunpp2)
    assert str(caught.value) == (
        "Sampler 'HeunPP2' is not one whose model calls per step SDXL Refiner knows (HeunPP2, say, evaluates the "
        "next steps' sigmas inside a step), so it cannot hand over exactly at a step. Pick Euler, Euler a, "
        "DPM++ 2M, DPM++ 2M SDE, DPM++ SDE, Heun or LMS, or turn SDXL Refiner off."
    )


@pytest.mark.parametrize("funcname", ["sample_euler", "sample_dpm_fast", "sample_lcm", "ddim", "plms", "sample_deis"])
def test_samplers_whose_calls_are_known_are_not_refused(funcname):
    def sample(model, x, sigmas, extra_args=None):
        return x

    refuse_unsupported(webui_sampler(funcname=funcname, config=listed_as("any")), sample)
