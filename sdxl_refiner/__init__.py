"""SDXL Refiner: hand one k-diffusion sampling loop from the base UNet to a refiner UNet.

The core package knows nothing of the WebUI; everything host-specific lives in
:mod:`sdxl_refiner.webui`.
"""

__version__ = "0.1.0"
