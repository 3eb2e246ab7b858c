"""Page-locked RAM for the refiner's weights, in buffers sized for torch's pinned allocator.

torch's caching host allocator rounds every pinned request up to the next power of two, so one
buffer for a 4.2 GiB fp16 refiner would lock 8 GiB, and one buffer per tensor wastes about a
third. The weights are laid out instead in consecutive groups whose totals each fill a power of
two from below: what is locked exceeds the weights by less than one tensor per group.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def next_power_of_two(size: int) -> int:
    """What the pinned allocator reserves for a request of ``size`` bytes."""
    return 1 << max(size - 1, 0).bit_length()


def _largest_power_of_two_within(size: int) -> int:
    return 1 << (size.bit_length() - 1) if size > 0 else 1


def power_of_two_groups(sizes: Sequence[int]) -> list[range]:
    """Consecutive groups of ``sizes`` (bytes, in order) for one buffer each.

    Each group is filled up to the largest power of two the remaining bytes reach (or, for a
    tensor larger than that, the power of two that holds it), so a group falls short of its
    rounded size by less than the tensor that did not fit, and the last group is exact.
    """
    groups: list[range] = []
    start = 0
    remaining = sum(sizes)
    while start < len(sizes):
        capacity = max(_largest_power_of_two_within(remaining), next_power_of_two(sizes[start]))
        end, total = start, 0
        while end < len(sizes) and total + sizes[end] <= capacity:
            total += sizes[end]
            end += 1
        groups.append(range(start, end))
        remaining -= total
        start = end
    return groups


def flat_buffer(elements: int, dtype: torch.dtype, pin_memory: bool) -> torch.Tensor:
    """The one place the weights' host memory is allocated (tests count the requests here)."""
    return torch.empty(elements, dtype=dtype, pin_memory=pin_memory)


def buffer_groups(counts: Sequence[int], dtype: torch.dtype, pin_memory: bool) -> list[range]:
    """How tensors of ``counts`` elements are split into buffers: one for pageable memory (nothing
    rounds it), power-of-two groups for pinned memory."""
    if not pin_memory:
        return [range(len(counts))]
    return power_of_two_groups([count * dtype.itemsize for count in counts])
