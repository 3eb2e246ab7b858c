"""Stand-in of ``modules.extra_networks``: prompts pass through unchanged; ``activate`` calls the
``extra_network_activators`` registered by tests (each gets ``p``), standing in for LoRA & co."""

from __future__ import annotations

extra_network_activators: list = []


def parse_prompts(prompts):
    return list(prompts), {}


def activate(p, extra_network_data):
    for activator in extra_network_activators:
        activator(p)
