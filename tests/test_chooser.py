"""The host is chosen once, by what it has: Forge's backend, and in Neo a prompt parser without the
old scheduling option."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    ("forge_backend", "takes_scheduling_option", "expected"),
    [(False, True, "WebUIBinding"), (True, True, "ForgeBinding"), (True, False, "NeoBinding")],
)
def test_the_binding_follows_what_the_host_has(webui, monkeypatch, forge_backend, takes_scheduling_option, expected):
    chooser = importlib.import_module("sdxl_refiner.chooser")
    monkeypatch.setattr(chooser, "running_in_forge", lambda: forge_backend)
    if not takes_scheduling_option:
        def neo_parser(model, prompts, steps, hires_steps=None):
            raise AssertionError("not called")

        monkeypatch.setattr(importlib.import_module("modules.prompt_parser"), "get_multicond_learned_conditioning",
                            neo_parser)
    binding = chooser.host_binding()
    assert type(binding).__name__ == expected
    assert binding.host_name == {"WebUIBinding": "the WebUI", "ForgeBinding": "Forge", "NeoBinding": "Forge Neo"}[expected]


def test_the_stand_in_and_this_environment_are_not_forge():
    from sdxl_refiner.chooser import running_in_forge

    assert not running_in_forge()


def test_neos_prompts_are_encoded_without_the_scheduling_option_and_forges_with_it(webui, monkeypatch):
    calls: list[tuple] = []
    parser = importlib.import_module("modules.prompt_parser")

    def record(name):
        def encode(*args, **kwargs):
            calls.append((name, len(args)))
            return []

        return encode

    monkeypatch.setattr(parser, "get_multicond_learned_conditioning", record("cond"))
    monkeypatch.setattr(parser, "get_learned_conditioning", record("uncond"))
    prompts = importlib.import_module("sdxl_refiner.host.prompts")
    job = prompts.PromptJob(("a fox",), ("",), 64, 64, 8, None)
    importlib.import_module("sdxl_refiner.bindings.neo").BINDING.encode_prompts(webui.shared.sd_model, job)
    importlib.import_module("sdxl_refiner.bindings.forge").BINDING.encode_prompts(webui.shared.sd_model, job)
    assert calls == [("cond", 4), ("uncond", 4), ("cond", 5), ("uncond", 5)]
