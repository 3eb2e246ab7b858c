"""The refiner prompt's LoRA tags read as the hosts' Lora extension reads the main prompt's, and
the set the refiner runs with."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdxl_refiner.core.errors import Cause, SettingsError
from sdxl_refiner.core.loras import LoraTag, base_loras_of, refiner_loras, split_loras


@pytest.mark.parametrize(("tag", "expected"), [
    ("<lora:a>", LoraTag("a", 1.0, 1.0, None)),
    ("<lora:a:0.5>", LoraTag("a", 0.5, 0.5, None)),
    ("<lora:a:0.5:0.2>", LoraTag("a", 0.5, 0.2, None)),
    ("<lora:a:0.5:0.2:16>", LoraTag("a", 0.5, 0.2, 16)),
    ("<lora:a:unet=0.3>", LoraTag("a", 1.0, 0.3, None)),
    ("<lora:a:te=0>", LoraTag("a", 0.0, 0.0, None)),
    # as the host reads it: the UNet weight follows the named te=, not the positional weight
    ("<lora:a:0.7:te=0.1>", LoraTag("a", 0.1, 0.1, None)),
    ("<lora:a:1:2:dyn=4>", LoraTag("a", 1.0, 2.0, 4)),
    ("<lyco:a:-1>", LoraTag("a", -1.0, -1.0, None)),
])
def test_each_weight_form_reads_as_the_lora_extension_reads_it(tag: str, expected: LoraTag) -> None:
    assert split_loras("prompt", f"x {tag} y") == ("x  y", (expected,))


def test_the_text_keeps_everything_but_the_tags_in_order() -> None:
    text, tags = split_loras("prompt", "<lora:a:1>film grain, <lora:b:0.5> pores<lora:a:0.2>")
    assert text == "film grain,  pores"
    assert [tag.name for tag in tags] == ["a", "b", "a"]


class FakeParams:
    """The host's ExtraNetworkParams: the tag's items as the host split them."""

    def __init__(self, *items: str):
        self.items = list(items)


def test_the_base_set_is_read_from_the_hosts_parsed_lora_and_lyco_tags() -> None:
    data = {"lora": [FakeParams("a", "0.5")], "lyco": [FakeParams("b", "1", "0.3")], "hypernet": [FakeParams("h")]}
    assert base_loras_of(data) == (LoraTag("a", 0.5, 0.5), LoraTag("b", 1.0, 0.3))
    assert base_loras_of(None) == ()


BASE = (LoraTag("style", 1.0, 1.0), LoraTag("character", 0.8, 0.8))
OWN = (LoraTag("detail", 0.5, 0.5), LoraTag("style", 0.0, 0.3))


def test_none_gives_the_refiner_its_own_loras_only() -> None:
    assert refiner_loras(BASE, OWN, "none") == OWN
    assert refiner_loras(BASE, (), "none") == ()


def test_same_gives_the_bases_then_its_own_and_its_own_weights_win() -> None:
    assert refiner_loras(BASE, OWN, "same") == (LoraTag("style", 0.0, 0.3), LoraTag("character", 0.8, 0.8),
                                                LoraTag("detail", 0.5, 0.5))
    assert refiner_loras(BASE, (), "same") == BASE


names = st.text(alphabet="abcxyz_-", min_size=1, max_size=6)
weights = st.floats(min_value=-4, max_value=4, allow_nan=False).map(lambda w: round(w, 3))


@given(st.lists(st.tuples(names, weights, weights), max_size=5), st.text(alphabet="ab ,.()", max_size=12))
def test_any_written_set_reads_back_as_written(written: list, text: str) -> None:
    prompt = text + "".join(f"<lora:{name}:{te}:{unet}>" for name, te, unet in written)
    stripped, tags = split_loras("prompt", prompt)
    assert stripped == text
    assert tags == tuple(LoraTag(name, te, unet) for name, te, unet in written)


def test_a_refused_tag_is_an_invalid_argument() -> None:
    with pytest.raises(SettingsError) as caught:
        split_loras("prompt", "<lora:a:x>")
    assert caught.value.cause is Cause.INVALID_ARGUMENT
