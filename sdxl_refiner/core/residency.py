"""Where the refiner UNet lives between and during generations, and the cache that keeps it.

Loading a refiner UNet costs seconds; keeping it makes every later switch a pointer swap
(``resident``) or an overlapped copy (``offload``). Decisions are pure functions of the host's
memory and flags so they are testable without a GPU; the CUDA calls sit behind small objects
that tests replace.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import gc
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from sdxl_refiner.core.errors import Cause, CheckpointError, SettingsError, out_of_memory

# Room left for activations while sampling at SDXL sizes (1024², batch 1, fp16, sliced attention).
DEFAULT_HEADROOM_BYTES = 2 * 2**30

FilePath = str | os.PathLike
Device = str | torch.device
# Builds the refiner UNet from its file, the way the host builds UNets.
Load = Callable[[Path], torch.nn.Module]


class Residency(str, enum.Enum):
    RESIDENT = "resident"
    OFFLOAD = "offload"
    LOWVRAM = "lowvram"


RESIDENCY_POLICIES = ("auto", *(residency.value for residency in Residency))


def choose_residency(
    policy: str,
    *,
    cuda: bool,
    free_bytes: int | None,
    refiner_bytes: int,
    host_lowvram: bool,
    host_medvram: bool,
    headroom_bytes: int = DEFAULT_HEADROOM_BYTES,
) -> Residency:
    """The user's choice, or for ``auto``: follow the host's memory mode, else keep the refiner
    beside the base when the GPU's free memory holds it and working room, else offload.
    On a CPU-only host every residency means "in RAM" (see ``storage_plan_for``)."""
    if policy not in RESIDENCY_POLICIES:
        raise SettingsError(
            f"Refiner residency {policy!r} is not one of {', '.join(RESIDENCY_POLICIES)}; "
            "pick one in Settings → SDXL Refiner (auto decides from free GPU memory)."
        )
    if policy != "auto":
        return Residency(policy)
    if not cuda:
        return Residency.RESIDENT
    if host_lowvram:
        return Residency.LOWVRAM
    if host_medvram or free_bytes is None:
        return Residency.OFFLOAD
    if free_bytes >= refiner_bytes + headroom_bytes:
        return Residency.RESIDENT
    return Residency.OFFLOAD


@dataclass(frozen=True)
class StoragePlan:
    """storage_device: where the cache keeps the refiner; prefetch: copy it to compute_device on a
    side stream from the start of sampling; pin_memory: page-locked RAM so that copy can overlap."""

    storage_device: str
    compute_device: str
    pin_memory: bool
    prefetch: bool


def storage_plan_for(residency: Residency, compute_device: Device) -> StoragePlan:
    compute = torch.device(compute_device)
    if compute.type != "cuda" or residency is Residency.RESIDENT:
        return StoragePlan(str(compute), str(compute), pin_memory=False, prefetch=False)
    # LOWVRAM: the host's per-block hooks move each block in as it runs; pinned RAM speeds them up.
    return StoragePlan("cpu", str(compute), pin_memory=True, prefetch=residency is Residency.OFFLOAD)


# --- copies on a side stream ----------------------------------------------------------------------


class StreamOps(Protocol):
    """The CUDA stream calls a side-stream copy needs; tests pass a recording stand-in."""

    def new_stream(self, device: torch.device) -> object: ...

    def on_stream(self, stream: object) -> AbstractContextManager: ...

    def record_event(self, stream: object) -> object: ...

    def wait_for(self, event: object, tensors: Mapping[str, torch.Tensor]) -> None: ...


class CudaStreamOps:
    def new_stream(self, device: torch.device) -> torch.cuda.Stream:
        return torch.cuda.Stream(device)

    def on_stream(self, stream: torch.cuda.Stream) -> AbstractContextManager:
        return torch.cuda.stream(stream)

    def record_event(self, stream: torch.cuda.Stream) -> torch.cuda.Event:
        event = torch.cuda.Event()
        event.record(stream)
        return event

    def wait_for(self, event: torch.cuda.Event, tensors: Mapping[str, torch.Tensor]) -> None:
        if not tensors:
            return
        current = torch.cuda.current_stream(next(iter(tensors.values())).device)
        current.wait_event(event)
        for tensor in tensors.values():
            # Allocated on the side stream, used on this one: keep the allocator from reusing early.
            tensor.record_stream(current)


def named_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


class DeviceCopy:
    """The refiner's tensors on the compute device, copied while the base samples."""

    def __init__(self, tensors: dict[str, torch.Tensor], event: object, ops: StreamOps):
        self._tensors = tensors
        self._event = event
        self._ops = ops
        self._ready = False

    def wait(self) -> dict[str, torch.Tensor]:
        """Makes the current stream wait for the copy; the switch calls this, nothing earlier."""
        if not self._ready:
            self._ops.wait_for(self._event, self._tensors)
            self._ready = True
        return self._tensors

    def nbytes(self) -> int:
        return sum(tensor.numel() * tensor.element_size() for tensor in self._tensors.values())


def start_device_copy(module: torch.nn.Module, device: Device, ops: StreamOps | None = None) -> DeviceCopy:
    """Queues the copy on a side stream and returns at once; from pinned memory it overlaps the
    base's steps, which keep running on the default stream."""
    ops = ops or CudaStreamOps()
    device = torch.device(device)
    stream = ops.new_stream(device)
    with ops.on_stream(stream):
        tensors = {
            name: torch.empty_like(tensor, device=device).copy_(tensor, non_blocking=True)
            for name, tensor in named_tensors(module).items()
        }
    return DeviceCopy(tensors, ops.record_event(stream), ops)


@contextmanager
def tensors_swapped_in(
    module: torch.nn.Module, tensors: Mapping[str, torch.Tensor]
) -> Iterator[torch.nn.Module]:
    """Points the module's parameters and buffers at other tensors (a device copy) and back on exit,
    so the cached copy is neither moved nor changed, whatever happens in between."""
    originals: list[tuple[dict, str, object]] = []
    try:
        for name, tensor in tensors.items():
            owner_name, _, leaf = name.rpartition(".")
            owner = module.get_submodule(owner_name)
            table = owner._parameters if leaf in owner._parameters else owner._buffers
            originals.append((table, leaf, table[leaf]))
            table[leaf] = (
                torch.nn.Parameter(tensor, requires_grad=False) if table is owner._parameters else tensor
            )
        yield module
    finally:
        for table, leaf, original in reversed(originals):
            table[leaf] = original


def tensor_snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's tensors as they are now, for :func:`put_back` after something moves the module.

    ``Module.to`` gives every parameter and buffer a new tensor: a trip to the GPU and back would
    leave pageable copies where the cache kept pinned RAM, and copy back weights that RAM still holds.
    """
    return {name: tensor.data for name, tensor in named_tensors(module).items()}


def put_back(module: torch.nn.Module, snapshot: Mapping[str, torch.Tensor]) -> None:
    """Points the module at the snapshot's tensors again; the copies a move made are let go."""
    for name, tensor in snapshot.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        if leaf in owner._parameters:
            owner._parameters[leaf].data = tensor
        else:
            owner._buffers[leaf] = tensor


# --- the cache ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileIdentity:
    """A file as it is now: a changed size or mtime means the weights may have changed."""

    path: Path
    size: int
    mtime_ns: int


def file_identity(path: FilePath) -> FileIdentity:
    resolved = Path(path).expanduser().resolve()
    try:
        stat = resolved.stat()
    except OSError:
        raise CheckpointError(
            f"Refiner checkpoint {str(path)!r} does not exist or cannot be read; choose a checkpoint "
            "from the list (refresh it if the file was just added).",
            Cause.NOT_FOUND,
        ) from None
    return FileIdentity(resolved, stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class _Request:
    """One file as it is now, and how it is built (``variant``: dtype, device, config…): another
    variant of the same file is another UNet. ``pinned``: it is loaded into page-locked RAM."""

    identity: FileIdentity
    variant: Hashable
    pinned: bool = False


class PendingRefiner:
    """A load that may still be running; ``result`` waits and raises its error as CheckpointError."""

    def __init__(self, future: Future, path: Path | str):
        self._future = future
        self._path = path

    def done(self) -> bool:
        return self._future.done()

    def add_done_callback(self, callback: Callable[[], object]) -> None:
        """Runs ``callback`` when the load ends (at once if it has): in the loading thread otherwise."""
        self._future.add_done_callback(lambda _: callback())

    def result(self, timeout: float | None = None) -> torch.nn.Module:
        try:
            return self._future.result(timeout)
        except (CheckpointError, TimeoutError, FutureTimeoutError):
            raise
        except Exception as error:
            if out_of_memory(error):
                raise CheckpointError(
                    f"Loading the refiner {str(self._path)!r} ran out of memory: {type(error).__name__}: {error}. "
                    "Free memory (or choose the offload residency) and try again.",
                    Cause.OUT_OF_MEMORY,
                ) from error
            raise CheckpointError(
                f"Loading the refiner {str(self._path)!r} failed: {type(error).__name__}: {error}. The console has "
                "the traceback; choose another refiner checkpoint if it is not a released SDXL model.",
                Cause.INTERNAL,
            ) from error


class OffloadedRefiner:
    """One pass's offloaded refiner: the copy to the GPU is queued on a side stream as soon as
    sampling starts (or, if the load is still running, the moment it finishes), so the switch waits
    only for what is left of it; the cached RAM copy is never moved, only pointed away from and back.

    ``start`` when sampling starts, ``at_switch`` from the router, ``release`` when the pass ends
    (on every exit). A load error surfaces from ``at_switch`` as CheckpointError.
    """

    def __init__(self, pending: PendingRefiner, device: Device, ops: StreamOps | None = None):
        self._pending = pending
        self._device = torch.device(device)
        self._ops = ops
        self._lock = threading.Lock()
        self._copy: DeviceCopy | None = None
        self._swap: contextlib.ExitStack | None = None
        self._released = False

    def start(self) -> None:
        self._pending.add_done_callback(self._queue_copy)

    def _queue_copy(self) -> DeviceCopy | None:
        with self._lock:
            if self._released:
                return None
            if self._copy is None and self._swap is None:
                try:
                    module = self._pending.result(timeout=0)
                except (CheckpointError, TimeoutError, FutureTimeoutError):
                    return None
                self._copy = start_device_copy(module, self._device, self._ops)
            return self._copy

    def at_switch(self) -> torch.nn.Module:
        module = self._pending.result()
        copy = self._queue_copy()
        if copy is None:
            raise RuntimeError("the pass's refiner was released before its switch")
        with self._lock:
            if self._swap is None:
                self._swap = contextlib.ExitStack()
                self._swap.enter_context(tensors_swapped_in(module, copy.wait()))
        return module

    def release(self) -> None:
        """Points the cached module back at its RAM tensors and lets the device copy go."""
        with self._lock:
            swap, self._swap, self._copy = self._swap, None, None
            self._released = True
        if swap is not None:
            swap.close()


def release_pinned_memory() -> None:
    """torch keeps freed pinned blocks locked for reuse; an evicted refiner's RAM is given back here."""
    empty_host_cache = getattr(torch._C, "_host_emptyCache", None)
    if empty_host_cache is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        empty_host_cache()


def return_freed_heap() -> None:
    """glibc keeps freed blocks below its mmap threshold (which rises to 32 MiB as large blocks are
    freed) in its arenas: after an unload, the free pages go back to the system. Elsewhere, nothing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _dropped(request: _Request) -> None:
    """After a cached UNet is let go: its pinned RAM goes back to the system, not to torch's cache."""
    if request.pinned:
        release_pinned_memory()


def _loaded(value: torch.nn.Module) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def _failed(error: BaseException) -> Future:
    future: Future = Future()
    future.set_exception(error)
    return future


class RefinerCache:
    """Refiner UNets by file identity; one per process, owned by the host layer.

    ``capacity`` UNets are kept (0: none, each generation loads its own). A changed file or another
    variant (dtype, device, config) is a miss; the stale copy is dropped before the new one loads so
    memory never holds both. Each host builds its UNets its own way: the caller passes the load.
    """

    def __init__(self, capacity: int = 1):
        self._entries: OrderedDict[Path, tuple[_Request, torch.nn.Module]] = OrderedDict()
        self._pending: dict[_Request, Future] = {}
        self._lock = threading.Lock()
        self._epoch = 0
        self._executor: ThreadPoolExecutor | None = None
        self.capacity = capacity

    @property
    def capacity(self) -> int:
        return self._capacity

    @capacity.setter
    def capacity(self, capacity: int) -> None:
        """A smaller capacity (the setting changed) drops the least recently used at once."""
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise SettingsError(
                f"Refiner cache size {capacity!r} is not allowed; use a whole number of models, 0 or more "
                "(1 keeps the last refiner)."
            )
        with self._lock:
            self._capacity = capacity
            self._evict_down_to(capacity)

    def start_loading(self, path: FilePath, load: Load, variant: Hashable = (), *, pinned: bool = False) -> PendingRefiner:
        """Starts ``load(path)`` in a background thread (at the start of a generation) so the switch
        only waits for what is left of it; every error, even a missing file, comes out of ``result``.
        A UNet cached for the same file as it is now and the same ``variant`` is handed back at once.
        ``pinned``: the load puts it in page-locked RAM, which is given back when it is dropped."""
        try:
            request = _Request(file_identity(path), variant, pinned)
        except CheckpointError as error:
            return PendingRefiner(_failed(error), path)
        with self._lock:
            cached = self._entries.get(request.identity.path)
            if cached is not None and cached[0] == request:
                self._entries.move_to_end(request.identity.path)
                return PendingRefiner(_loaded(cached[1]), request.identity.path)
            del cached  # a stale entry must be unreferenced here for _make_room to free it
            pending = self._pending.get(request)
            if pending is None:
                self._make_room(request)
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdxl-refiner-load")
                pending = self._executor.submit(self._load, request, load, self._epoch)
                self._pending[request] = pending
        return PendingRefiner(pending, request.identity.path)

    def _make_room(self, request: _Request) -> None:
        stale = self._entries.pop(request.identity.path, None)
        if stale is not None:
            stale_request = stale[0]
            del stale  # the module must be unreferenced before its memory can be given back
            _dropped(stale_request)
        self._evict_down_to(max(self.capacity - 1, 0))

    def _evict_down_to(self, count: int) -> None:
        """Least recently used first; the caller holds the lock."""
        while len(self._entries) > count:
            request = self._entries.popitem(last=False)[1][0]
            _dropped(request)

    def _load(self, request: _Request, load: Load, epoch: int) -> torch.nn.Module:
        try:
            module = load(request.identity.path)
        finally:
            with self._lock:
                self._pending.pop(request, None)
        with self._lock:
            if self.capacity and epoch == self._epoch:
                self._entries[request.identity.path] = (request, module)
                self._entries.move_to_end(request.identity.path)
                self._evict_down_to(self.capacity)
        return module

    def unload(self) -> list[FileIdentity]:
        """Drops every kept UNet and returns their files; a load still running finishes for its
        caller but is not kept."""
        with self._lock:
            dropped = [request for request, _ in self._entries.values()]
            self._entries.clear()
            self._epoch += 1
        for request in dropped:
            _dropped(request)
        gc.collect()  # a host's model objects may hold the UNet in reference cycles
        return_freed_heap()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        return [request.identity for request in dropped]

    def memory_by_device(self) -> dict[str, int]:
        """Bytes held by the kept UNets per device (``cpu``, ``cuda:0``…), shared storage counted once."""
        with self._lock:
            modules = [module for _, module in self._entries.values()]
        totals: dict[str, int] = {}
        seen: set[tuple[str, int]] = set()
        for module in modules:
            for tensor in named_tensors(module).values():
                if tensor.is_meta:
                    continue
                storage = tensor.untyped_storage()
                key = (str(tensor.device), storage.data_ptr())
                if key in seen:
                    continue
                seen.add(key)
                totals[str(tensor.device)] = totals.get(str(tensor.device), 0) + storage.nbytes()
        return totals

    def shutdown(self) -> None:
        """Waits for background loads; for tests and interpreter exit."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
