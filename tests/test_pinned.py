"""Pinned RAM for the refiner: buffers that torch's power-of-two rounding does not double."""

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

from sdxl_refiner.core import checkpoint
from sdxl_refiner.core.checkpoint import read_unet_state_dict
from sdxl_refiner.core.pinned import next_power_of_two, power_of_two_groups
from tests.support.checkpoints import UNET_PREFIX, write_checkpoint, write_pickle_checkpoint

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def locked_bytes(sizes, groups):
    return sum(next_power_of_two(sum(sizes[i] for i in group)) for group in groups)


@pytest.mark.parametrize(("size", "expected"), [(0, 1), (1, 1), (2, 2), (3, 4), (4096, 4096), (4097, 8192)])
def test_next_power_of_two_is_what_the_pinned_allocator_reserves(size, expected):
    assert next_power_of_two(size) == expected


@given(st.lists(st.integers(1, 10**8), min_size=1, max_size=60))
def test_groups_cover_the_tensors_in_order_and_each_wastes_less_than_one_tensor(sizes):
    groups = power_of_two_groups(sizes)
    assert [i for group in groups for i in group] == list(range(len(sizes)))
    assert all(len(group) > 0 for group in groups)
    for position, group in enumerate(groups):
        total = sum(sizes[i] for i in group)
        waste = next_power_of_two(total) - total
        following = sizes[groups[position + 1][0]] if position + 1 < len(groups) else 0
        assert waste < max(sizes[group[0]], following, 1)


@pytest.mark.parametrize("table", ["unet_sdxl_refiner", "unet_sdxl_base", "unet_sd15"])
@pytest.mark.parametrize("item_size", [2, 4])
def test_the_released_unets_lock_under_four_percent_more_than_their_weights(table, item_size):
    shapes = json.loads((FIXTURES / f"{table}.json").read_text())
    sizes = [math.prod(shape) * item_size for shape in shapes.values()]
    total = sum(sizes)
    assert next_power_of_two(total) / total > 1.2, "one buffer would lock far more"
    assert locked_bytes(sizes, power_of_two_groups(sizes)) / total < 1.04


class RecordingAllocator:
    """Stands in for pinned allocation on a machine without CUDA: records each request."""

    def __init__(self):
        self.requests: list[tuple[int, torch.dtype, bool]] = []

    def __call__(self, elements, dtype, pin_memory):
        self.requests.append((elements, dtype, pin_memory))
        return torch.empty(elements, dtype=dtype)


@pytest.fixture
def allocator(monkeypatch):
    recording = RecordingAllocator()
    monkeypatch.setattr(checkpoint, "flat_buffer", recording)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return recording


@pytest.mark.parametrize("writer", [write_checkpoint, write_pickle_checkpoint])
@pytest.mark.parametrize("dtype", [None, torch.float32])
def test_a_pinned_load_asks_for_buffers_that_round_up_by_little_and_reads_every_weight(
    tmp_path, allocator, writer, dtype
):
    path = writer(tmp_path / ("refiner.safetensors" if writer is write_checkpoint else "refiner.ckpt"), "refiner")
    state = read_unet_state_dict(path, dtype, pin_memory=True)
    reference = {
        key[len(UNET_PREFIX) :]: value
        for key, value in (load_file(str(path)) if writer is write_checkpoint else torch.load(path)["state_dict"]).items()
        if key.startswith(UNET_PREFIX)
    }
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[key], reference[key].to(dtype or reference[key].dtype)) for key in reference)
    assert all(pinned for _, _, pinned in allocator.requests)
    requested = [elements * dtype_.itemsize for elements, dtype_, _ in allocator.requests]
    weights = sum(t.numel() * t.element_size() for t in state.values())
    assert sum(requested) == weights
    assert sum(next_power_of_two(size) for size in requested) / weights < 1.1, "one buffer: 1.76, one per tensor: 1.39"


def test_a_pageable_load_reads_each_run_into_one_buffer(tmp_path, allocator):
    path = write_checkpoint(tmp_path / "refiner.safetensors", "refiner")
    read_unet_state_dict(path, pin_memory=False)
    assert [pinned for _, _, pinned in allocator.requests] == [False]
