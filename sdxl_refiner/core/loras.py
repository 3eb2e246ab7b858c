"""LoRA tags of the refiner prompt, and the set of LoRAs the refiner runs with.

A tag is written as in the main prompt, in the WebUI family's extra-network syntax
(``modules/extra_networks.py``): ``<lora:name>``, ``<lora:name:0.8>``, ``<lora:name:te:unet:dyn>``
or with named weights, ``<lora:name:unet=0.6:te=0.3>``; ``lyco`` is the hosts' other name for the
same network type. The weights are read as the hosts' built-in Lora extension reads them: the
text-encoder weight defaults to 1, the UNet weight to the text-encoder weight. Reading is all the
core does: the hosts' own LoRA machinery loads and applies them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sdxl_refiner.core.errors import Cause, SettingsError

# the hosts' extra-network syntax: <lora:name:1>, <hypernet:name:1>, ...
EXTRA_NETWORK_TAG = re.compile(r"<(\w+):([^>]+)>")
LORA_TYPES = ("lora", "lyco")


@dataclass(frozen=True)
class LoraTag:
    """One LoRA with the weights the host applies it at; ``dyn`` is the LyCORIS dynamic dimension."""

    name: str
    te: float = 1.0
    unet: float = 1.0
    dyn: int | None = None

    def key(self) -> tuple[str, float, float, int | None]:
        return (self.name, self.te, self.unet, self.dyn)


def _refuse_tag(field: str, written: str, problem: str, fix: str) -> SettingsError:
    return SettingsError(f"SDXL Refiner: '{field}' holds {written!r}: {problem}. {fix}", Cause.INVALID_ARGUMENT)


def _weight(field: str, written: str, what: str, text: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        weight = math.nan
    if not math.isfinite(weight):
        raise _refuse_tag(field, written, f"its {what} {text!r} is not a number",
                          "Write a number, such as <lora:name:0.8>.")
    return weight


def lora_from_items(field: str, written: str, items: Sequence[str]) -> LoraTag:
    """A tag's ``:``-separated items as the hosts' ``ExtraNetworkParams`` and Lora extension read them."""
    positional: list[str] = []
    named: dict[str, str] = {}
    for item in items:
        parts = item.split("=", 2)
        if len(parts) == 2:
            named[parts[0]] = parts[1]
        else:
            positional.append(item)
    name = positional[0].strip() if positional else ""
    if not name:
        raise _refuse_tag(field, written, "it names no LoRA", "Write the LoRA's name, such as <lora:name:0.8>.")
    te = _weight(field, written, "text-encoder weight", positional[1]) if len(positional) > 1 else 1.0
    te = _weight(field, written, "text-encoder weight", named["te"]) if "te" in named else te
    unet = _weight(field, written, "UNet weight", positional[2]) if len(positional) > 2 else te
    unet = _weight(field, written, "UNet weight", named["unet"]) if "unet" in named else unet
    dyn_text = named["dyn"] if "dyn" in named else (positional[3] if len(positional) > 3 else None)
    dyn = None
    if dyn_text is not None:
        try:
            dyn = int(dyn_text)
        except ValueError:
            raise _refuse_tag(field, written, f"its dynamic dimension {dyn_text!r} is not a whole number",
                              "Write a whole number, such as dyn=16, or leave it out.") from None
    return LoraTag(name=name, te=te, unet=unet, dyn=dyn)


def split_loras(field: str, text: str) -> tuple[str, tuple[LoraTag, ...]]:
    """The text without its tags, as the host hands the encoder the main prompt, and its LoRAs.

    Only LoRA tags are taken: any other extra network (a hypernetwork, say) would reach the base's
    encoder as text or be dropped, so it is refused with a message that names it."""
    loras: list[LoraTag] = []
    for match in EXTRA_NETWORK_TAG.finditer(text):
        kind, written = match.group(1), match.group(0)
        if kind not in LORA_TYPES:
            raise _refuse_tag(
                field, written, f"the refiner takes LoRAs (<lora:...>), not the extra network type {kind!r}",
                "Remove the tag; in the main prompt it still applies to the base.",
            )
        loras.append(lora_from_items(field, written, match.group(2).split(":")))
    return EXTRA_NETWORK_TAG.sub("", text), tuple(loras)


def refuse_any_tag(field: str, text: str) -> None:
    """A negative prompt takes no extra network in any host (the host would encode the tag as text)."""
    tag = EXTRA_NETWORK_TAG.search(text)
    if tag is not None:
        raise _refuse_tag(
            field, tag.group(0), "a negative prompt takes no extra network",
            "Write LoRA tags in the refiner prompt; any other tag in the main prompt.",
        )


def refiner_loras(base: Iterable[LoraTag], own: Iterable[LoraTag], base_loras: str) -> tuple[LoraTag, ...]:
    """The LoRAs the refiner runs with: its own, after the base's where ``base_loras`` is "same".

    A LoRA in both keeps its place among the base's and takes the refiner prompt's weights, so
    that the refiner prompt can change the weight of one of the base's LoRAs for the refiner."""
    chosen: dict[str, LoraTag] = {}
    if base_loras == "same":
        for tag in base:
            chosen[tag.name] = tag
    for tag in own:
        chosen[tag.name] = tag
    return tuple(chosen.values())


def host_params_loras(params_list: Iterable[object]) -> tuple[LoraTag, ...]:
    """The base's LoRAs from the host's parsed ``extra_network_data`` entries (``ExtraNetworkParams``)."""
    loras = []
    for params in params_list:
        items = [str(item) for item in getattr(params, "items", ())]
        loras.append(lora_from_items("prompt", "<lora:" + ":".join(items) + ">", items))
    return tuple(loras)


def base_loras_of(extra_network_data: Mapping[str, Iterable[object]] | None) -> tuple[LoraTag, ...]:
    """Every LoRA the host activated for a pass, ``lora`` and ``lyco`` tags alike."""
    data = extra_network_data or {}
    return tuple(tag for kind in LORA_TYPES for tag in host_params_loras(data.get(kind, ())))
