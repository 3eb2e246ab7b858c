"""The refiner's LoRAs in the host: found by the host's own Lora extension, named in the infotext.

Every host of the family ships the same extension surface (``extensions-builtin/Lora`` in the
WebUI, ``sd_forge_lora`` in Forge 2 and Neo): a module named ``networks`` whose lists know each
LoRA on disk by name and alias. The refiner prompt's tags are looked up there before any step, so
an unknown name is refused instead of skipped; applying them is each binding's part, with the
host's own loader.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from types import ModuleType

from sdxl_refiner.core.errors import Cause, SettingsError
from sdxl_refiner.core.loras import LoraTag, base_loras_of, refiner_loras, split_loras
from sdxl_refiner.core.settings import Settings

KEY_LORA_HASHES = "SDXL Refiner Lora hashes"
# the prefixes of a LoRA file's UNet keys, in the key forms the hosts' loaders convert
UNET_KEY_PREFIXES = ("lora_unet_", "diffusion_model", "oft_unet", "unet.", "lycoris_")
# and of its text-encoder keys (kohya's lora_te, lora_te1, lora_te2; diffusers' and Comfy's names)
TEXT_ENCODER_KEY_PREFIXES = ("lora_te", "te_", "te1", "te2", "text_encoder", "text_model", "clip_", "conditioner")
# what the Lora extension strips from a name before it writes "Lora hashes"
_HASH_NAME_SYMBOLS = str.maketrans("", "", ":,")


@dataclass
class RefinerLoras:
    """The refiner's LoRAs for one generation: ``own`` from its prompt (read once), ``chosen`` for
    the pass that runs (with the base's where ``base_loras`` is "same"), and the files they are."""

    own: tuple[LoraTag, ...] = ()
    chosen: tuple[LoraTag, ...] = ()
    base: tuple[LoraTag, ...] = ()
    files: dict[str, object] = field(default_factory=dict)
    # what the binding found while applying them: a LoRA that fits no layer of the refiner, ...
    notes: list[str] = field(default_factory=list)
    # the names, among both sets, of the LoRAs that have text-encoder layers
    with_text_encoder: frozenset[str] = frozenset()

    def text_encoder_differs(self) -> bool:
        """Whether the refiner's conds need the refiner's LoRAs on the encoder rather than the base's."""
        return self._text_encoder_key(self.chosen) != self._text_encoder_key(self.base)

    def _text_encoder_key(self, tags: tuple[LoraTag, ...]) -> tuple:
        return tuple(sorted((tag.name, tag.te, tag.dyn) for tag in tags
                            if tag.te != 0 and tag.name in self.with_text_encoder))


def networks_module() -> ModuleType:
    """The host's ``networks`` module, loaded by its built-in Lora extension."""
    found = sys.modules.get("networks")
    if found is None or not hasattr(found, "available_network_aliases"):
        raise SettingsError(
            "SDXL Refiner: the refiner prompt holds LoRA tags, but the host's built-in Lora extension is not "
            "loaded. Enable it (Extensions tab → Lora / sd_forge_lora) and restart, or remove the tags.",
            Cause.CONFLICT,
        )
    return found


def network_on_disk(networks: ModuleType, name: str):
    """The host's entry for ``name``, looked up as its ``load_networks`` does (aliases included)."""

    def lookup():
        if name.lower() in networks.forbidden_network_aliases:
            return networks.available_networks.get(name)
        return networks.available_network_aliases.get(name)

    found = lookup()
    if found is None:
        networks.list_available_networks()
        found = lookup()
    return found


def own_loras(prompt: str) -> tuple[LoraTag, ...]:
    """The refiner prompt's LoRAs (the prompt as styled), each found in the host's list."""
    _text, tags = split_loras("prompt", prompt)
    return tags


def find_files(tags: tuple[LoraTag, ...]) -> dict[str, object]:
    """Each tag's entry in the host's list; an unknown name is refused, naming it."""
    if not tags:
        return {}
    networks = networks_module()
    found: dict[str, object] = {}
    for tag in tags:
        entry = network_on_disk(networks, tag.name)
        if entry is None:
            raise SettingsError(
                f"SDXL Refiner: the refiner prompt names the LoRA {tag.name!r}, which is not in the host's LoRA "
                "list. Check the name in the Lora tab (or /sdapi/v1/loras), or click its refresh button after "
                "adding the file.",
                Cause.NOT_FOUND,
            )
        found[tag.name] = entry
    return found


def for_pass(p, settings: Settings, own: tuple[LoraTag, ...]) -> RefinerLoras:
    """The pass's set: the base's LoRAs are those the host activated for this pass (one it did not
    find, and skipped with its own warning, is not among them)."""
    data = getattr(p, "hr_extra_network_data", None) if getattr(p, "is_hr_pass", False) else None
    written = base_loras_of(data if data is not None else getattr(p, "extra_network_data", None))
    base_files = _found_files(written)
    base = tuple(tag for tag in written if tag.name in base_files)
    chosen = refiner_loras(base, own, settings.base_loras)
    files = {**base_files, **find_files(chosen)}
    with_text_encoder = frozenset(name for name, entry in files.items() if has_text_encoder_layers(entry.filename))
    return RefinerLoras(own=own, chosen=chosen, base=base, files=files, with_text_encoder=with_text_encoder)


def _found_files(tags: tuple[LoraTag, ...]) -> dict[str, object]:
    if not tags:
        return {}
    networks = networks_module()
    found = {tag.name: network_on_disk(networks, tag.name) for tag in tags}
    return {name: entry for name, entry in found.items() if entry is not None}


def hashes_text(loras: RefinerLoras) -> str:
    """"name: hash, ..." as the Lora extension writes its "Lora hashes" key."""
    parts = []
    for tag in loras.chosen:
        entry = loras.files.get(tag.name)
        if entry is None:
            continue
        entry.read_hash()
        if entry.shorthash:
            parts.append(f"{tag.name.translate(_HASH_NAME_SYMBOLS)}: {entry.shorthash}")
    return ", ".join(parts)


def has_text_encoder_layers(filename: str) -> bool:
    """Whether a LoRA file changes a text encoder, from its header; a file in another format than
    safetensors is taken to (its conds are then encoded again, which is never wrong)."""
    if not str(filename).endswith(".safetensors"):
        return True
    return any(key.startswith(TEXT_ENCODER_KEY_PREFIXES) for key in _keys(filename))


def _keys(filename: str) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(filename), framework="pt", device="cpu") as handle:
        return list(handle.keys())


def unet_layers_in_file(filename: str) -> set[str]:
    """The UNet layers a LoRA file names (a layer's down, up and alpha keys count once), from the
    header alone; a file in another format than safetensors counts none."""
    if not str(filename).endswith(".safetensors"):
        return set()
    # the Lora extension's own split of a key into layer and weight name
    return {key.partition(".")[0] for key in _keys(filename) if key.startswith(UNET_KEY_PREFIXES)}


def unmatched_note(name: str, matched: int, total: int) -> str:
    """What the infotext says of a LoRA that fits the refiner's UNet only in part, or not at all."""
    if matched == 0:
        return (f"LoRA {name} matches no layer of the refiner (it was made for another UNet), so it did not "
                "change the refiner")
    return f"LoRA {name}: {total - matched} of its {total} UNet layers match no layer of the refiner"
