"""The refiner cache as a binding uses it, for the cache's own tests: sgm's UNet class built by
``load_unet`` (or a stand-in ``loader`` with its signature), the variant keyed as the WebUI binding keys it."""

from __future__ import annotations

from sdxl_refiner.core.checkpoint import load_unet
from sdxl_refiner.core.residency import FileIdentity, PendingRefiner, RefinerCache


class Cache(RefinerCache):
    def __init__(self, capacity: int = 1, *, loader=load_unet):
        super().__init__(capacity)
        self.loader = loader

    def loading(self, path, build, dtype, device="cpu", *, pin_memory=False, host_config=None) -> PendingRefiner:
        def load(resolved):
            return self.loader(resolved, build, dtype, device, pin_memory=pin_memory, host_config=host_config)

        return self.start_loading(path, load, (dtype, str(device), pin_memory, host_config), pinned=pin_memory)

    def load(self, path, build, dtype, device="cpu", **options):
        return self.loading(path, build, dtype, device, **options).result(timeout=60)

    def kept(self) -> list[FileIdentity]:
        """White-box: the files whose UNets the cache holds, least recently used first."""
        with self._lock:
            return [request.identity for request, _ in self._entries.values()]
