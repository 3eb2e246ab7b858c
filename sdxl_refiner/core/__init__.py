"""The host-agnostic core: settings, the switch plan, the handoff, conditioning, checkpoints and
the refiner's residency. It imports torch, safetensors and k-diffusion only, never a host's modules."""
