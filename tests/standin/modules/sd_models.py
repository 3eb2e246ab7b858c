"""Stand-in of ``modules.sd_models`` (1.10.1): the checkpoint list, name lookup, the model holder.

``CheckpointInfo`` names, titles, hashes and aliases are built as in 1.10.1: the sha256 comes from
``hashes``' cache, so a checkpoint not hashed yet has no ``shorthash`` and a title without
``[hash]`` until ``calculate_shorthash`` (loading it does) computes it. ``load_model`` builds the
stand-in SDXL model (``sgm.models.diffusion.DiffusionEngine``) from a real safetensors file and
the config ``sd_models_config.find_checkpoint_config`` finds for it, applies ``lowvram`` and
computes ``cond_stage_model_empty_prompt``. Simplified: no model cache, no VAE handling.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading

from modules import hashes, lowvram, script_callbacks, shared

model_path = os.path.abspath("models/Stable-diffusion")

checkpoints_list: dict = {}
checkpoint_aliases: dict = {}
checkpoint_alisases = checkpoint_aliases

builtin_refiner_switches: list = []
"""Stand-in only: checkpoint infos the built-in refiner (sd_samplers_common.apply_refiner) switched to."""

re_strip_checksum = re.compile(r"\s*\[[^]]+]\s*$")


def replace_key(d, key, new_key, value):
    keys = list(d.keys())
    d[new_key] = value
    if key not in keys:
        return d
    index = keys.index(key)
    keys[index] = new_key
    new_d = {k: d[k] for k in keys}
    d.clear()
    d.update(new_d)
    return d


def model_hash(filename):
    """The old 8-character hash of 64 KiB at 1 MiB into the file (empty for the tiny test files)."""
    try:
        with open(filename, "rb") as file:
            digest = hashlib.sha256()
            file.seek(0x100000)
            digest.update(file.read(0x10000))
            return digest.hexdigest()[0:8]
    except FileNotFoundError:
        return 'NOFILE'


class CheckpointInfo:
    def __init__(self, filename):
        self.filename = filename
        abspath = os.path.abspath(filename)
        if abspath.startswith(model_path):
            name = abspath.replace(model_path, '')
        else:
            name = os.path.basename(filename)
        if name.startswith("\\") or name.startswith("/"):
            name = name[1:]

        self.is_safetensors = os.path.splitext(filename)[1].lower() == ".safetensors"
        self.metadata = {}
        self.name = name
        self.name_for_extra = os.path.splitext(os.path.basename(filename))[0]
        self.model_name = os.path.splitext(name.replace("/", "_").replace("\\", "_"))[0]
        self.hash = model_hash(filename)

        self.sha256 = hashes.sha256_from_cache(self.filename, f"checkpoint/{name}")
        self.shorthash = self.sha256[0:10] if self.sha256 else None

        self.title = name if self.shorthash is None else f'{name} [{self.shorthash}]'
        self.short_title = self.name_for_extra if self.shorthash is None else f'{self.name_for_extra} [{self.shorthash}]'

        self.ids = [self.hash, self.model_name, self.title, name, self.name_for_extra, f'{name} [{self.hash}]']
        if self.shorthash:
            self.ids += [self.shorthash, self.sha256, f'{self.name} [{self.shorthash}]', f'{self.name_for_extra} [{self.shorthash}]']

    def register(self):
        checkpoints_list[self.title] = self
        for id in self.ids:
            checkpoint_aliases[id] = self

    def calculate_shorthash(self):
        self.sha256 = hashes.sha256(self.filename, f"checkpoint/{self.name}")
        if self.sha256 is None:
            return

        shorthash = self.sha256[0:10]
        if self.shorthash == self.sha256[0:10]:
            return self.shorthash

        self.shorthash = shorthash

        if self.shorthash not in self.ids:
            self.ids += [self.shorthash, self.sha256, f'{self.name} [{self.shorthash}]', f'{self.name_for_extra} [{self.shorthash}]']

        old_title = self.title
        self.title = f'{self.name} [{self.shorthash}]'
        self.short_title = f'{self.name_for_extra} [{self.shorthash}]'

        replace_key(checkpoints_list, old_title, self.title, self)
        self.register()

        return self.shorthash


def checkpoint_tiles(use_short=False):
    return [x.short_title if use_short else x.title for x in checkpoints_list.values()]


def list_models():
    checkpoints_list.clear()
    checkpoint_aliases.clear()
    if not os.path.isdir(model_path):
        return
    for root, _, files in os.walk(model_path):
        for filename in sorted(files):
            if os.path.splitext(filename)[1].lower() in (".ckpt", ".safetensors"):
                CheckpointInfo(os.path.join(root, filename)).register()


def get_closet_checkpoint_match(search_string):
    if not search_string:
        return None

    checkpoint_info = checkpoint_aliases.get(search_string)
    if checkpoint_info is not None:
        return checkpoint_info

    found = sorted([info for info in checkpoints_list.values() if search_string in info.title], key=lambda x: len(x.title))
    if found:
        return found[0]

    search_string_without_checksum = re.sub(re_strip_checksum, '', search_string)
    found = sorted([info for info in checkpoints_list.values() if search_string_without_checksum in info.title], key=lambda x: len(x.title))
    if found:
        return found[0]

    return None


def select_checkpoint():
    checkpoint_info = checkpoint_aliases.get(shared.opts.sd_model_checkpoint)
    if checkpoint_info is not None:
        return checkpoint_info
    if not checkpoints_list:
        raise FileNotFoundError("No checkpoints found.")
    return next(iter(checkpoints_list.values()))


class SkipWritingToConfig:
    skip = False
    previous = None

    def __enter__(self):
        self.previous = SkipWritingToConfig.skip
        SkipWritingToConfig.skip = True
        return self

    def __exit__(self, exc_type, exc_value, exc_traceback):
        SkipWritingToConfig.skip = self.previous


class SdModelData:
    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False
        self.lock = threading.Lock()

    def get_sd_model(self):
        return self.sd_model

    def set_sd_model(self, v, already_loaded=False):
        self.sd_model = v
        if already_loaded:
            self.loaded_sd_models = [v]


model_data = SdModelData()


def get_empty_cond(sd_model):
    d = sd_model.get_learned_conditioning([""])
    if isinstance(d, dict):
        d = d['crossattn']
    return d


def build_model(checkpoint_info):
    """Stand-in only: the model a checkpoint file describes, built from its config, not made current."""
    from modules import sd_models_config
    from sgm.models.diffusion import load_engine, read_state

    state_dict = read_state(checkpoint_info.filename)
    return load_engine(state_dict, sd_models_config.find_checkpoint_config(state_dict, checkpoint_info))


def load_model(checkpoint_info=None, already_loaded_state_dict=None):
    checkpoint_info = checkpoint_info or select_checkpoint()
    if model_data.sd_model is not None and model_data.sd_model.lowvram:
        lowvram.send_everything_to_cpu()

    sd_model = build_model(checkpoint_info)
    sd_model.sd_model_hash = checkpoint_info.calculate_shorthash()
    sd_model.sd_model_checkpoint = checkpoint_info.filename
    sd_model.sd_checkpoint_info = checkpoint_info
    shared.opts.data["sd_model_checkpoint"] = checkpoint_info.title

    from modules import sd_hijack
    sd_hijack.model_hijack.hijack(sd_model)
    lowvram.apply(sd_model)
    sd_model.cond_stage_model_empty_prompt = get_empty_cond(sd_model)

    model_data.set_sd_model(sd_model, already_loaded=True)
    shared.sd_model = sd_model
    script_callbacks.model_loaded_callback(sd_model)
    return sd_model


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    checkpoint_info = info or select_checkpoint()
    current = model_data.sd_model
    if current is not None and current.sd_checkpoint_info is checkpoint_info and not forced_reload:
        return current
    return load_model(checkpoint_info)


def unload_model_weights(sd_model=None, info=None):
    if model_data.sd_model is not None and model_data.sd_model.lowvram:
        lowvram.send_everything_to_cpu()
    model_data.sd_model = None
    shared.sd_model = None
