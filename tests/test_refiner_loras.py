"""The refiner's LoRAs in the host layer and the two bindings, against a stand-in of the hosts' Lora
extension (its ``networks`` module): which files, which set for which pass, what the infotext says,
and that the host's lists and the base's patchers are left as they were. The live suites hold the
same against the real extension in each host (``tests/live/lora_oracles.py``)."""

from __future__ import annotations

import types

import pytest
import torch
from safetensors.torch import save_file

from sdxl_refiner.bindings.patcher import loras as patcher_loras
from sdxl_refiner.bindings.webui import loras as webui_loras
from sdxl_refiner.core.errors import Cause, SettingsError
from sdxl_refiner.core.loras import LoraTag
from sdxl_refiner.core.settings import Settings
from sdxl_refiner.host import loras, xyz


class OnDisk:
    def __init__(self, name: str, filename: str, shorthash: str = ""):
        self.name, self.filename, self.shorthash = name, filename, shorthash
        self.hashed = 0

    def read_hash(self) -> None:
        self.hashed += 1


class Net:
    def __init__(self, name: str, modules: dict | None = None):
        self.name = name
        self.modules = modules or {}
        self.te_multiplier = self.unet_multiplier = 1.0
        self.dyn_dim = None


def fake_networks(entries: dict[str, OnDisk], aliases: dict[str, OnDisk] | None = None) -> types.ModuleType:
    module = types.ModuleType("networks")
    module.available_networks = dict(entries)
    module.available_network_aliases = {**entries, **(aliases or {})}
    module.forbidden_network_aliases = {}
    module.loaded_networks = []
    module.listed = 0

    def list_available_networks():
        module.listed += 1

    module.list_available_networks = list_available_networks
    return module


@pytest.fixture
def networks(monkeypatch, tmp_path):
    unet_file = tmp_path / "unet.safetensors"
    save_file({"lora_unet_a.lora_down.weight": torch.zeros(1, 2), "lora_unet_a.lora_up.weight": torch.zeros(2, 1),
               "lora_unet_a.alpha": torch.tensor(1.0), "lora_unet_b.lora_down.weight": torch.zeros(1, 2),
               "lora_te1_c.lora_down.weight": torch.zeros(1, 2)}, str(unet_file))
    entries = {"detail": OnDisk("detail", str(unet_file), "aa11"), "style:v2": OnDisk("style:v2", str(unet_file), "bb22")}
    module = fake_networks(entries, aliases={"detail-alias": entries["detail"]})
    monkeypatch.setitem(__import__("sys").modules, "networks", module)
    return module


# --- host layer -----------------------------------------------------------------------------------


def test_each_name_is_found_as_the_host_finds_it_and_an_unknown_one_is_refused_naming_it(networks):
    found = loras.find_files((LoraTag("detail"), LoraTag("detail-alias")))
    assert found == {"detail": networks.available_networks["detail"], "detail-alias": networks.available_networks["detail"]}
    assert networks.listed == 0, "a known name needs no new listing"
    with pytest.raises(SettingsError) as refused:
        loras.find_files((LoraTag("detail"), LoraTag("nope")))
    assert refused.value.cause is Cause.NOT_FOUND
    assert "names the LoRA 'nope', which is not in the host's LoRA list" in str(refused.value)
    assert networks.listed == 1, "an unknown name makes the host list its files again first"


def test_a_name_the_host_forbids_as_an_alias_is_found_by_its_own_name_only(networks):
    networks.forbidden_network_aliases["detail-alias"] = 1
    with pytest.raises(SettingsError):
        loras.find_files((LoraTag("detail-alias"),))
    assert loras.find_files((LoraTag("detail"),))["detail"].name == "detail"


def test_no_tags_need_no_lora_extension(monkeypatch):
    monkeypatch.delitem(__import__("sys").modules, "networks", raising=False)
    assert loras.find_files(()) == {}
    with pytest.raises(SettingsError) as refused:
        loras.find_files((LoraTag("detail"),))
    assert refused.value.cause is Cause.CONFLICT and "built-in Lora extension is not loaded" in str(refused.value)


class Params:
    def __init__(self, *items: str):
        self.items = list(items)


def test_the_pass_takes_the_base_set_the_host_activated_for_it(networks):
    p = types.SimpleNamespace(is_hr_pass=False, extra_network_data={"lora": [Params("style:v2", "0.5")]},
                              hr_extra_network_data={"lora": [Params("detail", "0.7")]})
    same = Settings(enabled=True, checkpoint="x", base_loras="same")
    own = (LoraTag("detail", 0.3, 0.3),)
    first = loras.for_pass(p, same, own)
    assert first.chosen == (LoraTag("style:v2", 0.5, 0.5), LoraTag("detail", 0.3, 0.3))
    assert first.base == (LoraTag("style:v2", 0.5, 0.5),)
    p.is_hr_pass = True
    assert loras.for_pass(p, same, ()).chosen == (LoraTag("detail", 0.7, 0.7),)
    assert loras.for_pass(p, Settings(enabled=True, checkpoint="x"), ()).chosen == ()


@pytest.mark.parametrize(("chosen", "base", "differs"), [
    ((), (), False),
    ((LoraTag("a", 1.0, 0.5),), (LoraTag("a", 1.0, 0.9),), False),  # UNet weights do not touch the encoder
    ((LoraTag("a", 0.0, 1.0),), (), False),  # a text-encoder weight of 0 changes nothing there
    ((LoraTag("a", 0.5, 1.0),), (), True),
    ((), (LoraTag("a", 0.5, 1.0),), True),
    ((LoraTag("a", 0.5, 1.0), LoraTag("b")), (LoraTag("b"), LoraTag("a", 0.5, 0.1)), False),  # order alone
    ((LoraTag("a", 0.5, 1.0, 8),), (LoraTag("a", 0.5, 1.0),), True),
    ((LoraTag("a", 0.5, 1.0), LoraTag("unet-only", 0.5, 1.0)), (LoraTag("a", 0.5, 1.0),), False),
])
def test_the_refiners_conds_are_encoded_again_only_where_the_encoders_loras_differ(chosen, base, differs):
    """Only LoRAs with text-encoder layers count: a UNet-only LoRA's te weight changes no cond."""
    found = loras.RefinerLoras(chosen=chosen, base=base, with_text_encoder=frozenset({"a", "b"}))
    assert found.text_encoder_differs() is differs


def test_a_file_with_text_encoder_layers_is_told_from_its_header(networks, tmp_path):
    assert loras.has_text_encoder_layers(networks.available_networks["detail"].filename)
    unet_only = tmp_path / "unet-only.safetensors"
    save_file({"lora_unet_a.lora_down.weight": torch.zeros(1, 2)}, str(unet_only))
    assert not loras.has_text_encoder_layers(str(unet_only))
    assert loras.has_text_encoder_layers("old.pt"), "a file whose keys are not read is taken to have them"


def test_a_base_lora_the_host_did_not_find_is_not_in_the_base_set(networks):
    p = types.SimpleNamespace(is_hr_pass=False, extra_network_data={"lora": [Params("gone"), Params("detail")]})
    found = loras.for_pass(p, Settings(enabled=True, checkpoint="x", base_loras="same"), ())
    assert found.base == found.chosen == (LoraTag("detail"),)
    assert found.with_text_encoder == frozenset({"detail"})


def test_the_hashes_are_written_as_the_lora_extension_writes_its_own(networks):
    chosen = (LoraTag("style:v2"), LoraTag("detail"), LoraTag("nohash"))
    files = {"style:v2": networks.available_networks["style:v2"], "detail": networks.available_networks["detail"],
             "nohash": OnDisk("nohash", "x.safetensors")}
    assert loras.hashes_text(loras.RefinerLoras(chosen=chosen, files=files)) == "stylev2: bb22, detail: aa11"
    assert files["detail"].hashed == 1


def test_a_files_unet_layers_are_counted_from_its_header(networks):
    assert loras.unet_layers_in_file(networks.available_networks["detail"].filename) == {"lora_unet_a", "lora_unet_b"}
    assert loras.unet_layers_in_file("model.pt") == set()
    assert loras.unmatched_note("d", 0, 4).startswith("LoRA d matches no layer of the refiner")
    assert loras.unmatched_note("d", 3, 4) == "LoRA d: 1 of its 4 UNet layers match no layer of the refiner"


def test_the_xyz_search_and_replace_works_on_the_refiner_prompts_as_the_hosts_on_the_main_one():
    settings = Settings(enabled=True, checkpoint="x", prompt="grain <lora:d:0.2>", negative_prompt="blur 0.2")
    p = types.SimpleNamespace()
    assert xyz.with_prompt_sr(p, settings) is settings
    xyz.apply_prompt_sr(p, "0.9", ["0.2", "0.9"])
    replaced = xyz.with_prompt_sr(p, settings)
    assert (replaced.prompt, replaced.negative_prompt) == ("grain <lora:d:0.9>", "blur 0.9")
    xyz.apply_prompt_sr(p, "<lora:d:x>", ["<lora:d:0.2>", "<lora:d:x>"])
    with pytest.raises(SettingsError, match="text-encoder weight 'x' is not a number"):
        xyz.with_prompt_sr(p, settings)
    xyz.apply_prompt_sr(p, "z", ["fox", "z"])
    with pytest.raises(SettingsError, match="did not find 'fox' in the refiner prompt or its negative prompt"):
        xyz.with_prompt_sr(p, settings)
    assert xyz.with_prompt_sr(p, Settings()) == Settings(), "an axis cell with the refiner off changes nothing"


# --- the WebUI binding ----------------------------------------------------------------------------


class TinyUNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.input_blocks = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))


def test_the_refiners_layers_are_named_as_the_extension_names_the_bases():
    unet = TinyUNet()
    mapping = webui_loras.name_layers(unet)
    assert sorted(mapping) == ["diffusion_model", "diffusion_model_input_blocks",
                               "diffusion_model_input_blocks_0", "diffusion_model_input_blocks_1"]
    assert unet.input_blocks[1].network_layer_name == "diffusion_model_input_blocks_1"


def test_the_refiners_networks_are_built_against_its_layers_once_per_file(networks):
    unet = TinyUNet()
    text_layer = torch.nn.Linear(2, 2)
    base_unet_layer = torch.nn.Linear(2, 2)
    base_mapping = {"0_transformer_fc1": text_layer, "diffusion_model_input_blocks_0": base_unet_layer}
    sd_model = types.SimpleNamespace(network_layer_mapping=base_mapping)
    seen = []

    def load_network(name, entry):
        mapping = sd_model.network_layer_mapping
        seen.append(name)
        assert mapping["0_transformer_fc1"] is text_layer, "the base's text-encoder layers stay"
        assert mapping["diffusion_model_input_blocks_0"] is unet.input_blocks[0], "the refiner's UNet layers replace the base's"
        return Net(name, {"diffusion_model_input_blocks_0": object(), "0_transformer_fc1": object()})

    networks.load_network = load_network
    chosen = (LoraTag("detail", 0.5, 0.25, 4),)
    run = loras.RefinerLoras(chosen=chosen, files={"detail": networks.available_networks["detail"]})
    first = webui_loras.refiner_networks(sd_model, unet, run)
    assert sd_model.network_layer_mapping is base_mapping, "the base's mapping is back"
    assert (first[0].te_multiplier, first[0].unet_multiplier, first[0].dyn_dim) == (0.5, 0.25, 4)
    assert run.notes == ["LoRA detail: 1 of its 2 UNet layers match no layer of the refiner"]
    again = webui_loras.refiner_networks(sd_model, unet, loras.RefinerLoras(
        chosen=(LoraTag("detail", 1.0, 1.0),), files=run.files))
    assert seen == ["detail"], "the same file is built once for this refiner"
    assert again[0] is first[0] and again[0].unet_multiplier == 1.0


def test_the_hosts_list_holds_the_refiners_set_from_the_switch_to_the_end_of_the_pass(networks):
    base_net = Net("style")
    base_net.te_multiplier, base_net.unet_multiplier = 0.7, 0.6
    networks.loaded_networks[:] = [base_net]
    refiner_net = Net("detail", {"diffusion_model_input_blocks_0": object()})
    networks.load_network = lambda name, entry: refiner_net
    networks.extra_network_lora = types.SimpleNamespace(errors={"detail": 1})
    unet = TinyUNet()
    run = loras.RefinerLoras(chosen=(LoraTag("detail", 0.4, 0.4),), files={"detail": networks.available_networks["detail"]})
    lora_set = webui_loras.RefinerSet(types.SimpleNamespace(network_layer_mapping={}), run)
    lora_set.ended()
    assert networks.loaded_networks == [base_net], "a pass that never switched leaves the list alone"
    lora_set.on_switch(unet)
    assert networks.loaded_networks == [refiner_net]
    networks.extra_network_lora.errors["detail"] = 4
    lora_set.ended()
    assert networks.loaded_networks == [base_net]
    assert (base_net.te_multiplier, base_net.unet_multiplier) == (0.7, 0.6)
    assert "LoRA detail: 3 layers of the refiner did not take it (their shapes differ)" in run.notes


def test_a_refiner_without_loras_runs_with_an_empty_list_and_named_layers(networks):
    networks.loaded_networks[:] = [Net("style")]
    unet = TinyUNet()
    lora_set = webui_loras.RefinerSet(types.SimpleNamespace(network_layer_mapping={}), None)
    lora_set.on_switch(unet)
    assert networks.loaded_networks == [] and unet.input_blocks[0].network_layer_name
    lora_set.ended()
    assert [net.name for net in networks.loaded_networks] == ["style"]


def test_the_encoder_runs_with_the_refiners_set_by_the_extensions_own_activation(networks):
    base_net = Net("style")
    networks.loaded_networks[:] = [base_net]
    calls = []

    def load_networks(names, te, unet, dyn):
        calls.append((names, te, unet, dyn))
        base_net.te_multiplier = 0.1  # the extension reuses a loaded network and sets its weights
        networks.loaded_networks[:] = [base_net]

    networks.load_networks = load_networks
    with webui_loras.text_encoder_set((LoraTag("style", 0.1, 0.2, None),)):
        assert calls == [(["style"], [0.1], [0.2], [None])]
    assert networks.loaded_networks == [base_net] and base_net.te_multiplier == 1.0


# --- the Forge 2 / Neo binding --------------------------------------------------------------------


class Patcher:
    """A patcher as Forge 2 keeps its LoRAs (per file) or as Neo does (per weight)."""

    def __init__(self, per_file: bool, patches: dict | None = None):
        self.per_file = per_file
        if per_file:
            self.lora_patches = dict(patches or {})
        else:
            self.patches = dict(patches or {})


def test_the_refiners_set_is_chained_through_the_hosts_loader_from_the_refiner_and_the_original_clip(networks):
    calls = []

    def load_lora_for_models(unet, clip, state, strength_model, strength_clip, filename):
        calls.append((unet, clip, state, strength_model, strength_clip))
        if state == "mismatched":
            return unet, clip
        patched = {f"diffusion_model.{layer}.weight": [1] for layer in ("lora_unet_a", "lora_unet_b")}
        return Patcher(True, {(filename, strength_model, 1.0, False): patched}), f"clip+{strength_clip}"

    networks.load_lora_for_models = load_lora_for_models
    networks.load_lora_state_dict = lambda filename: "state"
    refiner = Patcher(True)
    chosen = (LoraTag("detail", 0.3, 0.6),)
    run = loras.RefinerLoras(chosen=chosen, files={"detail": networks.available_networks["detail"]})
    result = patcher_loras.with_loras(refiner, "original-clip", run)
    assert calls == [(refiner, "original-clip", "state", 0.6, 0.3)]
    assert result.clip == "clip+0.3" and result.unet is not refiner
    assert run.notes == []
    networks.load_lora_state_dict = lambda filename: "mismatched"
    run = loras.RefinerLoras(chosen=chosen, files=run.files)
    unchanged = patcher_loras.with_loras(refiner, "original-clip", run)
    assert unchanged.unet is refiner
    assert run.notes == ["LoRA detail matches no layer of the refiner (it was made for another UNet), so it did not "
                         "change the refiner"]


def test_no_loras_keep_the_cached_refiner_patcher(networks):
    refiner = Patcher(True)
    assert patcher_loras.with_loras(refiner, "clip", None).unet is refiner
    assert patcher_loras.with_loras(refiner, "clip", loras.RefinerLoras()).clip == "clip"


@pytest.mark.parametrize("per_file", [True, False], ids=["Forge 2", "Neo"])
def test_patches_are_counted_per_weight_in_either_hosts_patcher(per_file):
    if per_file:
        patcher = Patcher(True, {("a", 1, 1, False): {"w1": [1], "w2": [1]}, ("b", 1, 1, False): {"w1": [2]}})
    else:
        patcher = Patcher(False, {"w1": [1, 2], "w2": [1]})
    assert patcher_loras.patch_counts(patcher) == {"w1": 2, "w2": 1}


def test_the_clip_is_the_bases_again_after_an_encoding_that_fails():
    sd_model = types.SimpleNamespace(forge_objects=types.SimpleNamespace(clip="base"))
    with pytest.raises(RuntimeError), patcher_loras.encoding_with(sd_model, "refiner"):
        assert sd_model.forge_objects.clip == "refiner"
        raise RuntimeError("encoding failed")
    assert sd_model.forge_objects.clip == "base"


# --- the refiner's conds --------------------------------------------------------------------------


@pytest.mark.parametrize(("prompt", "differs", "encodes"), [
    ("<lora:detail:0.5>", False, False),  # tags alone keep the pass's prompt, and its encoder
    ("a fox <lora:detail:0.5>", False, False),  # the main prompt written again
    ("<lora:detail:0.5>", True, True),  # the encoder runs with other LoRAs
    ("grain <lora:detail:0.5>", False, True),  # another text
])
def test_the_refiners_conds_are_encoded_only_when_they_can_differ_from_the_pass(monkeypatch, prompt, differs, encodes):
    from sdxl_refiner.host import prompts
    from sdxl_refiner.host.run_state import RefinerRun

    monkeypatch.setattr(prompts, "_as_the_webui_prepares", lambda p, field, text: text)
    host_modules = types.ModuleType("modules")
    host_modules.shared = types.SimpleNamespace(sd_model="the base")
    host_modules.sd_samplers = types.SimpleNamespace()
    monkeypatch.setitem(__import__("sys").modules, "modules", host_modules)
    p = types.SimpleNamespace(is_hr_pass=False, prompts=["a fox "], negative_prompts=["blur"], width=64, height=64,
                              steps=8)
    tag = LoraTag("detail", 0.5, 0.5)
    run = RefinerRun(settings=Settings(enabled=True, checkpoint="x", prompt=prompt),
                     loras=loras.RefinerLoras(chosen=(tag,), base=() if differs else (tag,),
                                              with_text_encoder=frozenset({"detail"})))
    jobs = []
    conds = prompts.refiner_conds(p, run, lambda sd_model, job: jobs.append(job) or ("c", "u"))
    assert (conds is not None) is encodes
    assert len(jobs) == int(encodes)
    if encodes:
        assert jobs[0].loras == ((tag,) if differs else None)


# --- what each message says, and the paths a host without some attribute takes (mutation survivors) ---


@pytest.mark.parametrize(("prompt", "message"), [
    ("<lora:a:te=x>", "SDXL Refiner: 'prompt' holds '<lora:a:te=x>': its text-encoder weight 'x' is not a number. "
                      "Write a number, such as <lora:name:0.8>."),
    ("<lora:a:1:x>", "SDXL Refiner: 'prompt' holds '<lora:a:1:x>': its UNet weight 'x' is not a number. "
                     "Write a number, such as <lora:name:0.8>."),
    ("<lora:te=1>", "SDXL Refiner: 'prompt' holds '<lora:te=1>': it names no LoRA. Write the LoRA's name, such as "
                    "<lora:name:0.8>."),
])
def test_each_refused_tag_has_this_exact_message(prompt, message):
    with pytest.raises(SettingsError) as refused:
        loras.own_loras(prompt)
    assert str(refused.value) == message


def test_a_base_lora_the_host_parsed_is_read_with_the_main_prompts_words():
    from sdxl_refiner.core.loras import host_params_loras

    with pytest.raises(SettingsError) as refused:
        host_params_loras([Params("a", "1", "x")])
    assert str(refused.value).startswith("SDXL Refiner: 'prompt' holds '<lora:a:1:x>': its UNet weight 'x'")
    with pytest.raises(SettingsError, match="names no LoRA"):
        host_params_loras([object()])


def test_a_module_named_networks_that_is_not_the_lora_extensions_is_not_taken_for_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "networks", types.ModuleType("networks"))
    with pytest.raises(SettingsError) as refused:
        loras.networks_module()
    assert str(refused.value) == (
        "SDXL Refiner: the refiner prompt holds LoRA tags, but the host's built-in Lora extension is not loaded. "
        "Enable it (Extensions tab → Lora / sd_forge_lora) and restart, or remove the tags.")


def test_the_unknown_name_message_in_full(networks):
    with pytest.raises(SettingsError) as refused:
        loras.find_files((LoraTag("nope"),))
    assert str(refused.value) == (
        "SDXL Refiner: the refiner prompt names the LoRA 'nope', which is not in the host's LoRA list. Check the "
        "name in the Lora tab (or /sdapi/v1/loras), or click its refresh button after adding the file.")


def test_a_forbidden_alias_that_is_a_files_own_name_is_found_without_a_new_listing(networks):
    networks.forbidden_network_aliases["detail"] = 1
    assert loras.network_on_disk(networks, "detail") is networks.available_networks["detail"]
    assert networks.listed == 0


def test_a_pass_of_a_host_without_the_hires_fields_takes_the_first_pass_data(networks, tmp_path):
    own = (LoraTag("detail", 0.5, 0.5),)
    bare = types.SimpleNamespace()
    found = loras.for_pass(bare, Settings(enabled=True, checkpoint="x", base_loras="same"), own)
    assert (found.own, found.chosen, found.base) == (own, own, ())
    assert set(found.files) == {"detail"} and found.with_text_encoder == frozenset({"detail"})
    unet_only = tmp_path / "unet-only.safetensors"
    save_file({"lora_unet_a.lora_down.weight": torch.zeros(1, 2)}, str(unet_only))
    networks.available_network_aliases["unet-only"] = OnDisk("unet-only", str(unet_only))
    mixed = loras.for_pass(bare, Settings(enabled=True, checkpoint="x"), (*own, LoraTag("unet-only")))
    assert mixed.with_text_encoder == frozenset({"detail"})
    hires_without_its_data = types.SimpleNamespace(is_hr_pass=True, extra_network_data={"lora": [Params("detail")]})
    same = Settings(enabled=True, checkpoint="x", base_loras="same")
    assert loras.for_pass(hires_without_its_data, same, ()).chosen == (LoraTag("detail"),)
    first_pass = types.SimpleNamespace(extra_network_data={"lora": [Params("style:v2")]},
                                       hr_extra_network_data={"lora": [Params("detail")]})
    assert loras.for_pass(first_pass, Settings(enabled=True, checkpoint="x", base_loras="same"), ()).chosen == (
        LoraTag("style:v2"),)


def test_a_lora_without_a_hash_does_not_end_the_list(networks):
    files = {"nohash": OnDisk("nohash", "x.safetensors"), "detail": networks.available_networks["detail"]}
    chosen = (LoraTag("nohash"), LoraTag("missing"), LoraTag("detail"))
    assert loras.hashes_text(loras.RefinerLoras(chosen=chosen, files=files)) == "detail: aa11"


def test_the_xyz_replacement_is_checked_in_the_field_it_lands_in():
    settings = Settings(enabled=True, checkpoint="x", prompt="grain", negative_prompt="blur")
    p = types.SimpleNamespace()
    xyz.apply_prompt_sr(p, "<lora:d:1>", ["blur", "<lora:d:1>"])
    with pytest.raises(SettingsError, match=r"^SDXL Refiner: 'negative_prompt' holds '<lora:d:1>'"):
        xyz.with_prompt_sr(p, settings)
    xyz.apply_prompt_sr(p, "<hypernet:d:1>", ["grain", "<hypernet:d:1>"])
    with pytest.raises(SettingsError, match=r"^SDXL Refiner: 'prompt' holds '<hypernet:d:1>'"):
        xyz.with_prompt_sr(p, settings)
    xyz.apply_prompt_sr(p, "z", ["fox", "z"])
    with pytest.raises(SettingsError) as refused:
        xyz.with_prompt_sr(p, settings)
    assert str(refused.value) == (
        "SDXL Refiner: X/Y/Z axis 'SDXL Refiner prompt S/R' did not find 'fox' in the refiner prompt or its negative "
        "prompt. Its first value is the text to replace: write it into the refiner prompt.")


def test_two_files_are_built_apart_and_a_base_without_a_mapping_gets_the_hosts(networks, tmp_path):
    other = tmp_path / "other.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 2)}, str(other))
    networks.available_networks["other"] = OnDisk("other", str(other))
    sd_model = types.SimpleNamespace()

    def assign(model):
        model.network_layer_mapping = {"0_fc1": torch.nn.Linear(1, 1)}

    networks.assign_network_names_to_compvis_modules = assign
    built = []

    def load_network(name, entry):
        assert entry is networks.available_networks[name]
        built.append(name)
        return Net(name, {"diffusion_model_input_blocks_0": object()})

    networks.load_network = load_network
    run = loras.RefinerLoras(chosen=(LoraTag("detail"), LoraTag("other")),
                             files={"detail": networks.available_networks["detail"], "other": networks.available_networks["other"]})
    nets = webui_loras.refiner_networks(sd_model, TinyUNet(), run)
    assert built == ["detail", "other"] and nets[0] is not nets[1]
    assert list(sd_model.network_layer_mapping) == ["0_fc1"]
    assert run.notes == ["LoRA detail: 1 of its 2 UNet layers match no layer of the refiner"], "other: 1 of 1 fits"


def test_a_file_whose_layers_are_not_counted_gets_no_note_and_one_of_one_layer_that_fits_none_gets_one(tmp_path):
    assert webui_loras._match_notes("old", "old.pt", Net("old")) == []
    one_layer = tmp_path / "one.safetensors"
    save_file({"lora_unet_a.lora_down.weight": torch.zeros(1, 2)}, str(one_layer))
    assert webui_loras._match_notes("one", str(one_layer), Net("one")) == [loras.unmatched_note("one", 0, 1)]


def test_ending_a_pass_twice_leaves_the_bases_list(networks):
    base_net = Net("style")
    networks.loaded_networks[:] = [base_net]
    networks.load_network = lambda name, entry: Net(name)
    lora_set = webui_loras.RefinerSet(types.SimpleNamespace(network_layer_mapping={}), loras.RefinerLoras())
    lora_set.on_switch(TinyUNet())
    lora_set.ended()
    lora_set.ended()
    assert networks.loaded_networks == [base_net]


def test_layer_errors_count_from_zero_for_a_network_the_counter_did_not_list():
    nets = [Net("new"), Net("old"), Net("clean")]
    notes = webui_loras.error_notes({"old": 2}, {"new": 1, "old": 3, "clean": 0}, nets)
    assert notes == ["LoRA new: 1 layers of the refiner did not take it (their shapes differ)",
                     "LoRA old: 1 layers of the refiner did not take it (their shapes differ)"]
    assert webui_loras.error_notes({"old": 2}, {"old": 2}, nets) == []


def test_a_chain_notes_the_lora_that_matched_nothing_after_one_that_matched(networks, tmp_path):
    one_layer = tmp_path / "one.safetensors"
    save_file({"lora_unet_a.lora_down.weight": torch.zeros(1, 2)}, str(one_layer))
    networks.available_networks["one"] = OnDisk("one", str(one_layer))
    seen = []

    def load_lora_for_models(unet, clip, state, strength_model, strength_clip, filename):
        seen.append((state, filename))
        if state.endswith("one.safetensors"):
            return unet, clip  # the loader found no layer of it
        patches = {**unet.lora_patches, (filename, strength_model, 1.0, False): {"diffusion_model.lora_unet_a.weight": [1]}}
        return Patcher(True, patches), clip

    networks.load_lora_for_models = load_lora_for_models
    networks.load_lora_state_dict = lambda filename: f"state of {filename}"
    run = loras.RefinerLoras(chosen=(LoraTag("detail"), LoraTag("one")),
                             files={"detail": networks.available_networks["detail"], "one": networks.available_networks["one"]})
    patcher_loras.with_loras(Patcher(True), "clip", run)
    detail_file = networks.available_networks["detail"].filename
    assert seen == [(f"state of {detail_file}", detail_file), (f"state of {one_layer}", str(one_layer))]
    assert run.notes == [
        "LoRA detail: 1 of its 2 UNet layers match no layer of the refiner",
        "LoRA one matches no layer of the refiner (it was made for another UNet), so it did not change the refiner",
    ]


def test_a_patcher_with_no_patches_of_either_kind_counts_none():
    assert patcher_loras.patch_counts(types.SimpleNamespace()) == {}
