"""Residency decisions, side-stream copies (their logic, on the CPU) and the refiner cache."""

import gc
import os
import threading
import weakref
from contextlib import contextmanager

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sdxl_refiner.core.checkpoint import load_unet
from sdxl_refiner.core.errors import CheckpointError, SettingsError
from sdxl_refiner.core.residency import (
    DEFAULT_HEADROOM_BYTES,
    OffloadedRefiner,
    Residency,
    StoragePlan,
    choose_residency,
    put_back,
    start_device_copy,
    storage_plan_for,
    tensor_snapshot,
    tensors_swapped_in,
)
from tests.support.cache import Cache
from tests.support.checkpoints import small_unet_params, write_checkpoint
from tests.support.sgm_unet import SgmUNet

GIB = 2**30
NO_FLAGS = {"host_lowvram": False, "host_medvram": False}


def build_sgm(params):
    return SgmUNet(**params)


# --- decisions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cuda", "free", "lowvram", "medvram", "expected"),
    [
        (False, None, False, False, Residency.RESIDENT),
        (False, None, True, True, Residency.RESIDENT),
        (True, 20 * GIB, True, False, Residency.LOWVRAM),
        (True, 20 * GIB, False, True, Residency.OFFLOAD),
        (True, None, False, False, Residency.OFFLOAD),
        (True, 5 * GIB + DEFAULT_HEADROOM_BYTES, False, False, Residency.RESIDENT),
        (True, 5 * GIB + DEFAULT_HEADROOM_BYTES - 1, False, False, Residency.OFFLOAD),
        (True, 1 * GIB, False, False, Residency.OFFLOAD),
    ],
)
def test_auto_residency_follows_host_flags_then_free_memory(cuda, free, lowvram, medvram, expected):
    chosen = choose_residency(
        "auto", cuda=cuda, free_bytes=free, refiner_bytes=5 * GIB, host_lowvram=lowvram, host_medvram=medvram
    )
    assert chosen is expected


@pytest.mark.parametrize("policy", list(Residency))
@pytest.mark.parametrize("cuda", [False, True])
def test_an_explicit_residency_setting_overrides_the_decision(policy, cuda):
    assert (
        choose_residency(
            policy.value, cuda=cuda, free_bytes=0, refiner_bytes=GIB, host_lowvram=True, host_medvram=True
        )
        is policy
    )


@given(
    free=st.integers(0, 64 * GIB),
    more=st.integers(0, 64 * GIB),
    refiner=st.integers(1, 8 * GIB),
    headroom=st.integers(0, 4 * GIB),
)
def test_more_free_memory_never_moves_the_refiner_off_the_gpu(free, more, refiner, headroom):
    def decide(free_bytes):
        return choose_residency(
            "auto",
            cuda=True,
            free_bytes=free_bytes,
            refiner_bytes=refiner,
            headroom_bytes=headroom,
            **NO_FLAGS,
        )

    if decide(free) is Residency.RESIDENT:
        assert decide(free + more) is Residency.RESIDENT
    assert (decide(free) is Residency.RESIDENT) == (free >= refiner + headroom)


def test_an_unknown_residency_setting_is_refused_with_the_allowed_values():
    with pytest.raises(SettingsError, match=r"'gpu'.*auto, resident, offload, lowvram"):
        choose_residency("gpu", cuda=True, free_bytes=None, refiner_bytes=1, **NO_FLAGS)


@pytest.mark.parametrize("residency", list(Residency))
def test_on_a_cpu_host_every_residency_means_in_ram(residency):
    assert storage_plan_for(residency, "cpu") == StoragePlan("cpu", "cpu", pin_memory=False, prefetch=False)


def test_on_a_cuda_host_only_offload_prefetches_and_only_resident_stores_on_the_gpu():
    assert storage_plan_for(Residency.RESIDENT, "cuda:0") == StoragePlan("cuda:0", "cuda:0", False, False)
    assert storage_plan_for(Residency.OFFLOAD, "cuda:0") == StoragePlan("cpu", "cuda:0", True, True)
    assert storage_plan_for(Residency.LOWVRAM, "cuda:0") == StoragePlan("cpu", "cuda:0", True, False)


# --- side-stream copy, with the CUDA calls recorded -------------------------------------------------


class RecordingStreamOps:
    def __init__(self):
        self.log = []
        self.on_side_stream = False

    def new_stream(self, device):
        self.log.append(("new_stream", str(device)))
        return "side"

    @contextmanager
    def on_stream(self, stream):
        self.log.append(("enter", stream))
        self.on_side_stream = True
        try:
            yield
        finally:
            self.on_side_stream = False
            self.log.append(("exit", stream))

    def record_event(self, stream):
        self.log.append(("record", stream))
        return "event"

    def wait_for(self, event, tensors):
        self.log.append(("wait", event, len(tensors)))


class CopyWatch(torch.overrides.TorchFunctionMode):
    """Notes whether each copy_ is issued on the side stream and non-blocking."""

    def __init__(self, ops):
        super().__init__()
        self.ops = ops
        self.copies = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") == "copy_":
            self.copies.append((self.ops.on_side_stream, kwargs.get("non_blocking", False)))
        return func(*args, **kwargs)


def test_the_device_copy_is_queued_on_a_side_stream_and_waited_for_only_at_use():
    unet = SgmUNet(**small_unet_params("refiner"))
    ops = RecordingStreamOps()
    with CopyWatch(ops) as watch:
        copy = start_device_copy(unet, "cpu", ops)
    tensors = dict(unet.named_parameters())
    assert len(watch.copies) == len(tensors) + len(dict(unet.named_buffers()))
    assert all(on_side and non_blocking for on_side, non_blocking in watch.copies)
    assert ops.log == [("new_stream", "cpu"), ("enter", "side"), ("exit", "side"), ("record", "side")]

    copied = copy.wait()
    copy.wait()
    assert ops.log[4:] == [("wait", "event", len(copied))]
    for name, tensor in tensors.items():
        assert torch.equal(copied[name], tensor)
        assert copied[name].untyped_storage().data_ptr() != tensor.untyped_storage().data_ptr()
    assert copy.nbytes() == sum(t.numel() * t.element_size() for t in copied.values())


def test_swapping_tensors_in_points_the_module_at_them_and_restores_the_originals_even_on_error():
    unet = SgmUNet(**small_unet_params("refiner"))
    originals = {name: id(p) for name, p in unet.named_parameters()}
    zeros = {name: torch.zeros_like(p) for name, p in unet.named_parameters()}
    with tensors_swapped_in(unet, zeros):
        assert all(torch.count_nonzero(p) == 0 for p in unet.parameters())
    with pytest.raises(RuntimeError), tensors_swapped_in(unet, zeros):
        raise RuntimeError("interrupted")
    assert {name: id(p) for name, p in unet.named_parameters()} == originals


def test_a_module_moved_away_and_back_is_put_back_on_its_own_tensors():
    unet = SgmUNet(**small_unet_params("refiner"))
    unet.register_buffer("scale", torch.ones(3))
    parameters = dict(unet.named_parameters())
    storages = {name: t.data_ptr() for name, t in unet.state_dict().items()}
    snapshot = tensor_snapshot(unet)
    unet.to(torch.float64)  # like a trip to the GPU and back: every tensor replaced
    assert all(t.data_ptr() != storages[name] for name, t in unet.state_dict().items())
    put_back(unet, snapshot)
    assert {name: t.data_ptr() for name, t in unet.state_dict().items()} == storages
    assert {name: t.dtype for name, t in unet.state_dict().items()} == dict.fromkeys(storages, torch.float32)
    assert all(p is parameters[name] for name, p in unet.named_parameters()), "same Parameter objects"


# --- cache --------------------------------------------------------------------------------------------


class CountingLoader:
    def __init__(self, release: threading.Event | None = None):
        self.paths = []
        self.release = release

    def __call__(self, path, build, dtype, device, *, pin_memory=False, host_config=None):
        self.paths.append(path.name)
        if self.release is not None:
            assert self.release.wait(30)
        return load_unet(path, build, dtype, device, pin_memory=pin_memory, host_config=host_config)


@pytest.fixture
def refiners(tmp_path):
    return [write_checkpoint(tmp_path / f"refiner{i}.safetensors", "refiner", seed=i) for i in range(3)]


def param_bytes(module):
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def test_a_second_request_for_the_same_file_is_a_hit(refiners):
    loader = CountingLoader()
    cache = Cache(loader=loader)
    first = cache.load(refiners[0], build_sgm, torch.float16)
    assert cache.load(refiners[0], build_sgm, torch.float16) is first
    assert loader.paths == ["refiner0.safetensors"]
    assert cache.memory_by_device() == {"cpu": param_bytes(first)}


def test_a_changed_file_is_a_miss_and_the_stale_unet_is_not_kept(refiners):
    loader = CountingLoader()
    cache = Cache(loader=loader)
    first = cache.load(refiners[0], build_sgm, torch.float32)
    write_checkpoint(refiners[0], "refiner", seed=9)
    stat = refiners[0].stat()
    os.utime(refiners[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = cache.load(refiners[0], build_sgm, torch.float32)
    assert second is not first
    assert loader.paths == ["refiner0.safetensors"] * 2
    assert not torch.equal(next(second.parameters()), next(first.parameters()))
    assert [identity.mtime_ns for identity in cache.kept()] == [refiners[0].stat().st_mtime_ns]


def test_another_dtype_is_a_miss_and_memory_is_reported_in_bytes(refiners):
    cache = Cache()
    half = cache.load(refiners[0], build_sgm, torch.float16)
    full = cache.load(refiners[0], build_sgm, torch.float32)
    assert cache.memory_by_device() == {"cpu": param_bytes(full)} == {"cpu": 2 * param_bytes(half)}


@pytest.mark.parametrize("capacity", [0, 1, 2])
def test_the_cache_keeps_the_most_recently_used_up_to_its_capacity(refiners, capacity):
    loader = CountingLoader()
    cache = Cache(capacity, loader=loader)
    for path in [refiners[0], refiners[1], refiners[0], refiners[2]]:
        cache.load(path, build_sgm, torch.float16)
    kept = [identity.path.name for identity in cache.kept()]
    expected = {0: [], 1: ["refiner2.safetensors"], 2: ["refiner0.safetensors", "refiner2.safetensors"]}
    assert kept == expected[capacity]
    loads = {0: 4, 1: 4, 2: 3}
    assert len(loader.paths) == loads[capacity]


def test_unload_drops_everything_and_the_next_request_loads_again(refiners):
    loader = CountingLoader()
    cache = Cache(loader=loader)
    cache.load(refiners[0], build_sgm, torch.float16)
    cache.unload()
    assert cache.memory_by_device() == {}
    assert cache.kept() == []
    cache.load(refiners[0], build_sgm, torch.float16)
    assert len(loader.paths) == 2


@pytest.mark.parametrize("capacity", [-1, 1.5, True, "2"])
def test_a_cache_size_that_is_not_a_whole_number_is_refused(capacity):
    with pytest.raises(SettingsError, match="cache size"):
        Cache(capacity)


def test_a_background_load_is_shared_with_a_request_made_while_it_runs(refiners):
    release = threading.Event()
    loader = CountingLoader(release)
    cache = Cache(loader=loader)
    pending = cache.loading(refiners[0], build_sgm, torch.float16)
    waiter = threading.Thread(target=lambda: results.append(cache.load(refiners[0], build_sgm, torch.float16)))
    results = []
    waiter.start()
    assert not pending.done()
    release.set()
    module = pending.result(timeout=30)
    waiter.join(30)
    assert results == [module]
    assert loader.paths == ["refiner0.safetensors"]
    cache.shutdown()


def test_a_background_load_leaves_the_main_threads_random_numbers_alone(refiners):
    torch.manual_seed(123)
    expected = [torch.randn(64) for _ in range(200)]
    cache = Cache()
    torch.manual_seed(123)
    pending = cache.loading(refiners[0], build_sgm, torch.float32)
    drawn = [torch.randn(64) for _ in range(200)]
    pending.result(timeout=60)
    assert all(torch.equal(a, b) for a, b in zip(drawn, expected, strict=True))
    cache.shutdown()


def test_a_failed_background_load_raises_at_result_and_keeps_nothing(tmp_path, refiners):
    truncated = write_checkpoint(tmp_path / "broken.safetensors", "refiner")
    os.truncate(truncated, truncated.stat().st_size - 100)
    cache = Cache()
    pending = cache.loading(truncated, build_sgm, torch.float16)
    with pytest.raises(CheckpointError, match=r"broken\.safetensors.*truncated"):
        pending.result(timeout=30)
    with pytest.raises(CheckpointError, match=r"broken\.safetensors.*truncated"):
        pending.result(timeout=30)
    assert cache.kept() == [] and cache.memory_by_device() == {}
    cache.shutdown()


def test_a_missing_file_fails_at_result_not_when_the_load_is_started(tmp_path):
    pending = Cache().loading(tmp_path / "gone.safetensors", build_sgm, torch.float16)
    assert pending.done()
    with pytest.raises(CheckpointError, match=r"gone\.safetensors.*does not exist"):
        pending.result()


def test_an_unexpected_load_failure_reaches_the_caller_as_a_checkpoint_error(refiners):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    cache = Cache(loader=out_of_memory)
    pending = cache.loading(refiners[0], build_sgm, torch.float16)
    with pytest.raises(CheckpointError, match=r"refiner0\.safetensors.*out of memory.*offload"):
        pending.result(timeout=30)
    with pytest.raises(CheckpointError, match="out of memory"):
        cache.load(refiners[0], build_sgm, torch.float16)
    assert cache.kept() == []
    cache.shutdown()


def test_a_failed_load_leaves_the_other_kept_refiners_in_place(tmp_path, refiners):
    broken = write_checkpoint(tmp_path / "broken.safetensors", "refiner")
    os.truncate(broken, broken.stat().st_size - 100)
    cache = Cache(2)
    kept = cache.load(refiners[0], build_sgm, torch.float16)
    with pytest.raises(CheckpointError):
        cache.load(broken, build_sgm, torch.float16)
    assert [identity.path for identity in cache.kept()] == [refiners[0].resolve()]
    assert cache.load(refiners[0], build_sgm, torch.float16) is kept


def test_the_main_thread_builds_on_its_own_device_while_a_background_build_is_on_meta(refiners):
    inside_build = threading.Event()
    release = threading.Event()

    def slow_build(config):
        inside_build.set()
        assert release.wait(30)
        return build_sgm(config)

    cache = Cache()
    pending = cache.loading(refiners[0], slow_build, torch.float16)
    assert inside_build.wait(30)
    try:
        assert torch.empty(1).device.type == "cpu"
        assert torch.nn.Linear(2, 2).weight.device.type == "cpu"
    finally:
        release.set()
    assert next(pending.result(timeout=30).parameters()).device.type == "cpu"
    cache.shutdown()


def test_lowering_the_capacity_drops_the_least_recently_used_at_once(refiners):
    cache = Cache(3)
    for path in [refiners[0], refiners[1], refiners[2], refiners[0]]:
        cache.load(path, build_sgm, torch.float16)
    cache.capacity = 1
    assert [identity.path.name for identity in cache.kept()] == ["refiner0.safetensors"]
    with pytest.raises(SettingsError):
        cache.capacity = -2
    assert cache.capacity == 1


# --- an offloaded refiner over one pass ------------------------------------------------------------


def test_an_offloaded_refiner_queues_its_copy_at_start_and_swaps_it_in_only_at_the_switch(refiners):
    cache = Cache()
    module = cache.load(refiners[0], build_sgm, torch.float16)
    originals = {name: p for name, p in module.named_parameters()}
    ops = RecordingStreamOps()
    offloaded = OffloadedRefiner(cache.loading(refiners[0], build_sgm, torch.float16), "cpu", ops)
    offloaded.start()
    assert [entry[0] for entry in ops.log] == ["new_stream", "enter", "exit", "record"]

    assert offloaded.at_switch() is module
    assert offloaded.at_switch() is module
    assert [entry[0] for entry in ops.log].count("wait") == 1
    swapped = dict(module.named_parameters())
    assert all(swapped[name] is not p and torch.equal(swapped[name], p) for name, p in originals.items())

    offloaded.release()
    assert all(p is originals[name] for name, p in module.named_parameters())


def test_an_offloaded_refiner_still_loading_at_start_is_copied_when_the_load_ends(refiners):
    release = threading.Event()
    cache = Cache(loader=CountingLoader(release))
    ops = RecordingStreamOps()
    offloaded = OffloadedRefiner(cache.loading(refiners[0], build_sgm, torch.float16), "cpu", ops)
    offloaded.start()
    assert ops.log == []
    release.set()
    module = offloaded.at_switch()
    assert [entry[0] for entry in ops.log] == ["new_stream", "enter", "exit", "record", "wait"]
    swapped = dict(module.named_parameters())
    offloaded.release()
    assert all(p is not swapped[name] for name, p in module.named_parameters())
    cache.shutdown()


def test_an_offloaded_refiner_released_before_its_load_ends_never_copies(refiners):
    release = threading.Event()
    cache = Cache(loader=CountingLoader(release))
    ops = RecordingStreamOps()
    pending = cache.loading(refiners[0], build_sgm, torch.float16)
    offloaded = OffloadedRefiner(pending, "cpu", ops)
    offloaded.start()
    offloaded.release()
    release.set()
    pending.result(timeout=30)
    cache.shutdown()
    assert ops.log == []


def test_an_offloaded_refiner_whose_load_failed_raises_at_the_switch(tmp_path):
    ops = RecordingStreamOps()
    pending = Cache().loading(tmp_path / "gone.safetensors", build_sgm, torch.float16)
    offloaded = OffloadedRefiner(pending, "cpu", ops)
    offloaded.start()
    with pytest.raises(CheckpointError, match=r"gone\.safetensors"):
        offloaded.at_switch()
    offloaded.release()
    assert ops.log == []


class ReleaseWatch:
    """Records, at each release of pinned RAM, which kept refiners were still alive."""

    def __init__(self, monkeypatch):
        self.alive_at_release: list[list[str]] = []
        self.modules: dict[str, object] = {}
        monkeypatch.setattr("sdxl_refiner.core.residency.release_pinned_memory", self.release)

    def track(self, name, module):
        self.modules[name] = weakref.ref(module)

    def release(self):
        gc.collect()
        self.alive_at_release.append(sorted(name for name, ref in self.modules.items() if ref() is not None))


def pinned_loader(path, build, dtype, device, *, pin_memory=False, host_config=None):
    """Asks for pinned RAM as a CUDA host would; this machine loads it pageable."""
    assert pin_memory
    return load_unet(path, build, dtype, device, host_config=host_config)


def test_a_pinned_refiner_dropped_by_the_cache_gives_its_ram_back_once_it_is_freed(refiners, monkeypatch):
    watch = ReleaseWatch(monkeypatch)
    cache = Cache(1, loader=pinned_loader)
    watch.track("0", cache.load(refiners[0], build_sgm, torch.float16, pin_memory=True))
    assert watch.alive_at_release == []
    watch.track("1", cache.load(refiners[1], build_sgm, torch.float16, pin_memory=True))
    assert watch.alive_at_release == [[]]
    cache.unload()
    assert watch.alive_at_release == [[], []]


def test_a_pinned_refiner_replaced_by_its_changed_file_is_freed_before_the_ram_is_given_back(refiners, monkeypatch):
    watch = ReleaseWatch(monkeypatch)
    cache = Cache(2, loader=pinned_loader)
    watch.track("old", cache.load(refiners[0], build_sgm, torch.float16, pin_memory=True))
    stat = refiners[0].stat()
    os.utime(refiners[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    cache.load(refiners[0], build_sgm, torch.float16, pin_memory=True)
    assert watch.alive_at_release == [[]]


def test_pageable_refiners_leave_the_pinned_ram_cache_alone(refiners, monkeypatch):
    watch = ReleaseWatch(monkeypatch)
    cache = Cache(1)
    for path in [refiners[0], refiners[1]]:
        cache.load(path, build_sgm, torch.float16)
    cache.capacity = 0
    cache.unload()
    assert watch.alive_at_release == []
