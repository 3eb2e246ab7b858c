"""SDXL Refiner: hand one k-diffusion sampling loop from the base UNet to a refiner UNet.

Layers, each importing only those below it: ``chooser`` (picks the host's binding) → ``bindings``
(one per host) → ``host`` (what every WebUI-family host shares) → ``core`` (no host at all).
"""

__version__ = "0.1.0"
