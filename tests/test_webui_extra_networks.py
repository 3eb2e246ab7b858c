"""LoRA-style extra networks on the base: they patch the base's layers by name and leave the refiner alone."""

from __future__ import annotations

import torch

from tests.standin.refiner_runs import CallTrace, cached_refiner, refine, ui_args


def lora_like(webui, monkeypatch, delta: float = 0.01):
    """What the built-in Lora extension does: names every layer of ``sd_model.model`` when activated,
    and a patched ``Linear.forward`` that changes the output of named layers only."""
    touched: list[str] = []

    def activate(p):
        for name, module in webui.shared.sd_model.model.named_modules():
            module.network_layer_name = name.replace(".", "_")

    original_forward = torch.nn.Linear.forward

    def network_forward(self, x):
        out = original_forward(self, x)
        name = getattr(self, "network_layer_name", None)
        if name is None:
            return out
        touched.append(name)
        return out + delta

    monkeypatch.setattr(torch.nn.Linear, "forward", network_forward)
    webui.module("modules.extra_networks").extra_network_activators.append(activate)
    return touched


def test_a_lora_on_the_base_leaves_the_refiner_unnamed_and_unchanged(webui, monkeypatch):
    webui.write_pair()
    refiner = cached_refiner(webui)
    weights = {k: v.clone() for k, v in refiner.state_dict().items()}
    touched = lora_like(webui, monkeypatch)
    trace = CallTrace()
    trace.attach(refiner, "refiner")
    p = webui.txt2img(steps=4, enable_hr=True, hr_second_pass_steps=4, denoising_strength=0.5)
    result = refine(webui, p, ui_args(steps_percent=50, hires_pass="both"))
    assert trace.calls and touched
    assert all(getattr(module, "network_layer_name", None) is None for module in refiner.modules())
    assert all(torch.equal(refiner.state_dict()[k], v) for k, v in weights.items())
    assert torch.isfinite(result.samples[0]).all()


def test_base_weights_refiner_with_a_lora_differs_from_base_with_lora_only_in_refiner_steps(webui, monkeypatch):
    webui.write_pair()
    webui.write_checkpoint("copy.safetensors", engine=webui.shared.sd_model)
    lora_like(webui, monkeypatch)
    with_lora = webui.run(webui.txt2img(seed=51, steps=4)).samples[0]
    refined = refine(webui, webui.txt2img(seed=51, steps=4), ui_args(checkpoint="copy.safetensors", steps_percent=50)).samples[0]
    assert not torch.equal(with_lora, refined)  # the refiner steps ran without the base's LoRA
