"""The refiner's LoRAs in WebUI 1.10, through its built-in Lora extension (``extensions-builtin/Lora``).

The extension patches the forward of every Linear, Conv and Norm layer: a layer that has a
``network_layer_name`` first brings its weights to the set in ``networks.loaded_networks``,
restoring its own backup when the set changed since it last ran. So:

- the refiner UNet's layers get the names the base's layers have, and the refiner's networks are
  built by the extension's own ``load_network`` against a mapping of the refiner's layers (a
  refiner-type UNet has other shapes under the same names), cached on the refiner UNet;
- ``loaded_networks`` holds the refiner's set from the switch to the end of the pass, and the
  base's again after it, so that no base layer runs with the refiner's set nor the refiner's
  with the base's;
- the refiner's prompts are encoded with the extension's own ``load_networks`` of the refiner's
  set, as the main prompt is with the base's, and the base's list (and weights) put back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

import torch

from sdxl_refiner.core.errors import SettingsError
from sdxl_refiner.core.loras import LoraTag
from sdxl_refiner.host.loras import RefinerLoras, networks_module, unet_layers_in_file, unmatched_note

UNET_PREFIX = "diffusion_model"
# on the refiner UNet: the networks built against its layers, by file and modification time
BUILT_ATTRIBUTE = "sdxl_refiner_networks"

Snapshot = list[tuple[object, float, float, object]]


def snapshot(networks: ModuleType) -> Snapshot:
    return [(net, net.te_multiplier, net.unet_multiplier, net.dyn_dim) for net in networks.loaded_networks]


def restore(networks: ModuleType, saved: Snapshot) -> None:
    networks.loaded_networks[:] = [net for net, *_ in saved]
    for net, te, unet, dyn in saved:
        net.te_multiplier, net.unet_multiplier, net.dyn_dim = te, unet, dyn


@contextmanager
def text_encoder_set(tags: Sequence[LoraTag]) -> Iterator[None]:
    """The host's LoRA list set to ``tags`` for an encoding, by the extension's own activation."""
    networks = networks_module()
    saved = snapshot(networks)
    try:
        networks.load_networks([tag.name for tag in tags], [tag.te for tag in tags], [tag.unet for tag in tags],
                               [tag.dyn for tag in tags])
        yield
    finally:
        restore(networks, saved)


def name_layers(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The refiner's layers under the names the extension gives the base's (``diffusion_model_...``)."""
    mapping = {}
    for name, module in unet.named_modules():
        layer_name = UNET_PREFIX + ("_" + name.replace(".", "_") if name else "")
        module.network_layer_name = layer_name
        mapping[layer_name] = module
    return mapping


def refiner_networks(sd_model, unet: torch.nn.Module, loras: RefinerLoras) -> list:
    """The refiner's set as the extension's ``Network`` objects, built against the refiner's layers."""
    networks = networks_module()
    built: dict = getattr(unet, BUILT_ATTRIBUTE, None)
    if built is None:
        built = {}
        setattr(unet, BUILT_ATTRIBUTE, built)
    mapping = name_layers(unet)
    chosen = []
    for tag in loras.chosen:
        entry = loras.files[tag.name]
        key = (tag.name, entry.filename, os.path.getmtime(entry.filename))
        net = built.get(key)
        if net is None:
            net = built[key] = _load_against(networks, sd_model, mapping, tag.name, entry)
        loras.notes.extend(net.sdxl_refiner_notes)
        net.te_multiplier, net.unet_multiplier, net.dyn_dim = tag.te, tag.unet, tag.dyn
        chosen.append(net)
    return chosen


def _load_against(networks: ModuleType, sd_model, unet_mapping: dict, name: str, entry) -> object:
    """``networks.load_network`` with the refiner's UNet layers in place of the base's in the mapping
    it matches keys against; the base's text-encoder layers stay (the refiner's conds come from them)."""
    if not hasattr(sd_model, "network_layer_mapping"):
        networks.assign_network_names_to_compvis_modules(sd_model)
    base_mapping = sd_model.network_layer_mapping
    mapping = {key: module for key, module in base_mapping.items() if not key.startswith(UNET_PREFIX)}
    mapping.update(unet_mapping)
    sd_model.network_layer_mapping = mapping
    try:
        net = networks.load_network(name, entry)
    finally:
        sd_model.network_layer_mapping = base_mapping
    net.sdxl_refiner_notes = _match_notes(name, entry.filename, net)
    return net


def _match_notes(name: str, filename: str, net) -> list[str]:
    total = len(unet_layers_in_file(filename))
    matched = sum(1 for key in net.modules if key.startswith(UNET_PREFIX))
    if total == 0 or matched >= total:
        return []
    return [unmatched_note(name, matched, total)]


class RefinerSet:
    """The host's LoRA list made the refiner's at the switch and the base's again at the pass's end;
    what the extension could not patch on the refiner's layers becomes a note."""

    def __init__(self, sd_model, loras: RefinerLoras | None):
        self.sd_model = sd_model
        self.loras = loras if loras is not None else RefinerLoras()
        self.saved: Snapshot | None = None
        self.nets: list = []
        self.errors_before: dict[str, int] = {}

    def on_switch(self, unet: torch.nn.Module) -> None:
        networks = _loaded_networks_module()
        if networks is None:
            return
        self.nets = refiner_networks(self.sd_model, unet, self.loras)
        self.errors_before = layer_errors(networks)
        self.saved = snapshot(networks)
        networks.loaded_networks[:] = self.nets

    def ended(self) -> None:
        if self.saved is None:
            return
        networks = networks_module()
        restore(networks, self.saved)
        self.saved = None
        self.loras.notes.extend(error_notes(self.errors_before, layer_errors(networks), self.nets))


def _loaded_networks_module() -> ModuleType | None:
    """The extension where it is loaded; without it no layer is patched, and there is nothing to set."""
    try:
        return networks_module()
    except SettingsError:
        return None


def layer_errors(networks: ModuleType) -> dict[str, int]:
    """The extension's count of layers each network failed to patch (shapes that do not fit)."""
    counter = getattr(getattr(networks, "extra_network_lora", None), "errors", None)
    return dict(counter) if isinstance(counter, dict) else {}


def error_notes(before: dict[str, int], after: dict[str, int], nets: list) -> list[str]:
    notes = []
    for net in nets:
        failed = after.get(net.name, 0) - before.get(net.name, 0)
        if failed > 0:
            notes.append(f"LoRA {net.name}: {failed} layers of the refiner did not take it (their shapes differ)")
    return notes
