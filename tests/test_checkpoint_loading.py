"""Reading only the UNet of a checkpoint, converting its dtype, and building the module from it."""

import os

import pytest
import torch

import sdxl_refiner.core.checkpoint as checkpoint
from sdxl_refiner.core.checkpoint import load_unet, read_unet_state_dict
from sdxl_refiner.core.errors import CheckpointError
from tests.support.checkpoints import (
    random_unet_state,
    small_unet_params,
    write_checkpoint,
)
from tests.support.sgm_unet import SgmUNet

PREFIX = "model.diffusion_model."


def build_sgm(params):
    return SgmUNet(**params)


@pytest.fixture
def refiner_state():
    return random_unet_state(small_unet_params("refiner"), seed=7, dtype=torch.float16)


@pytest.fixture
def refiner_path(tmp_path, refiner_state):
    return write_checkpoint(tmp_path / "refiner.safetensors", "refiner", unet_state=refiner_state)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, None])
def test_unet_tensors_are_read_in_the_requested_dtype_with_the_file_values(
    refiner_path, refiner_state, dtype
):
    state = read_unet_state_dict(refiner_path, dtype)
    assert state.keys() == refiner_state.keys()
    for key, value in state.items():
        assert value.dtype == (dtype or torch.float16)
        assert torch.equal(value, refiner_state[key].to(value.dtype))


def test_the_state_owns_its_memory_and_does_not_change_when_the_file_is_rewritten(tmp_path, refiner_state):
    path = write_checkpoint(tmp_path / "refiner.safetensors", "refiner", unet_state=refiner_state)
    state = read_unet_state_dict(path)
    zeros = {key: torch.zeros_like(value) for key, value in refiner_state.items()}
    with path.open("r+b") as file:
        file.seek(0, os.SEEK_END)
        size = file.tell()
    write_checkpoint(path, "refiner", unet_state=zeros)
    assert path.stat().st_size == size
    assert all(torch.equal(state[key], refiner_state[key]) for key in state)


class RangeRecorder:
    """Wraps the file object the reader opens and records every byte range it reads."""

    def __init__(self, file, ranges):
        self.file = file
        self.ranges = ranges

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def seek(self, offset, whence=os.SEEK_SET):
        return self.file.seek(offset, whence)

    def readinto(self, buffer):
        start = self.file.tell()
        got = self.file.readinto(buffer)
        self.ranges.append((start, start + got))
        return got


def test_only_the_byte_ranges_of_unet_tensors_are_read(tmp_path, refiner_state, monkeypatch):
    path = write_checkpoint(
        tmp_path / "big.safetensors", "refiner", unet_state=refiner_state, filler_bytes=2**20
    )
    ranges = []
    opener = checkpoint._open_for_reading
    monkeypatch.setattr(checkpoint, "_open_for_reading", lambda p: RangeRecorder(opener(p), ranges))
    read_unet_state_dict(path, torch.float32)

    with path.open("rb") as file:
        data_start = 8 + int.from_bytes(file.read(8), "little")
    header = checkpoint.read_safetensors_header(path)
    unet = sorted(
        (data_start + e.start, data_start + e.end) for k, e in header.items() if k.startswith(PREFIX)
    )
    assert any(not key.startswith(PREFIX) for key in header)

    def inside_unet(start, end):
        return any(a <= start and end <= b for a, b in merge(unet))

    assert all(inside_unet(start, end) for start, end in ranges)
    assert sum(end - start for start, end in ranges) == sum(end - start for start, end in unet)


def merge(ranges):
    merged = []
    for start, end in ranges:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def storage_read_bytes() -> int:
    with open("/proc/self/io") as stats:
        return next(int(line.split()[1]) for line in stats if line.startswith("read_bytes"))


def test_bytes_fetched_from_storage_are_about_the_unet_bytes_not_the_file(tmp_path, refiner_state):
    filler = 64 * 2**20
    path = write_checkpoint(
        tmp_path / "big.safetensors", "refiner", unet_state=refiner_state, filler_bytes=filler
    )
    unet_bytes = sum(value.numel() * value.element_size() for value in refiner_state.values())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    before = storage_read_bytes()
    read_unet_state_dict(path)
    fetched = storage_read_bytes() - before
    if fetched < unet_bytes:
        pytest.skip(f"storage reads are not observable here (saw {fetched} bytes; tmpfs or page cache kept)")
    # Read-ahead of the kernel can fetch a few MiB around the UNet's range, never the 64 MiB filler.
    assert fetched < unet_bytes + filler // 2, f"{fetched} bytes fetched for {unet_bytes} UNet bytes"


def test_loaded_unet_equals_a_unet_with_the_file_weights_and_leaves_the_global_rng_alone(
    refiner_path, refiner_state
):
    rng_before = torch.get_rng_state()
    unet = load_unet(refiner_path, build_sgm, torch.float32)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert not any(p.requires_grad for p in unet.parameters())
    assert not unet.training
    loaded = unet.state_dict()
    assert loaded.keys() == refiner_state.keys()
    assert all(torch.equal(loaded[key], refiner_state[key].float()) for key in loaded)

    params = small_unet_params("refiner")
    reference = SgmUNet(**params)
    reference.load_state_dict({key: value.float() for key, value in refiner_state.items()})
    x = torch.randn(1, 4, 8, 8)
    context = torch.randn(1, 3, params["context_dim"])
    y = torch.randn(1, params["adm_in_channels"])
    t = torch.tensor([300.0])
    torch.testing.assert_close(unet(x, t, context=context, y=y), reference(x, t, context=context, y=y))


def test_a_build_that_draws_random_numbers_still_leaves_the_global_rng_alone(refiner_path):
    def noisy_build(params):
        torch.randn(100)
        return SgmUNet(**params)

    rng_before = torch.get_rng_state()
    load_unet(refiner_path, noisy_build, torch.float32)
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_a_unet_missing_a_tensor_is_refused_naming_the_file_and_the_tensor(tmp_path, refiner_state):
    state = dict(refiner_state)
    del state["out.0.bias"]
    path = write_checkpoint(tmp_path / "incomplete.safetensors", "refiner", unet_state=state)
    with pytest.raises(CheckpointError, match=r"incomplete\.safetensors.*missing.*out\.0\.bias"):
        load_unet(path, build_sgm, torch.float32)


def test_a_unet_that_does_not_fit_the_built_module_is_refused_with_the_mismatches(refiner_path):
    def wrong_width(params):
        return SgmUNet(**{**params, "context_dim": params["context_dim"] + 8})

    with pytest.raises(CheckpointError, match=r"refiner\.safetensors.*shape mismatches.*attn2\.to_k\.weight"):
        load_unet(refiner_path, wrong_width, torch.float32)


def test_a_module_with_tensors_the_file_lacks_is_refused(refiner_path):
    def with_extra_buffer(params):
        unet = SgmUNet(**params)
        unet.register_buffer("calibration", torch.zeros(3), persistent=False)
        return unet

    with pytest.raises(CheckpointError, match=r"calibration"):
        load_unet(refiner_path, with_extra_buffer, torch.float32)


@pytest.mark.parametrize("kind", ["sd1", "inpaint"])
def test_a_checkpoint_that_cannot_refine_is_refused_before_reading_weights(tmp_path, kind, monkeypatch):
    path = write_checkpoint(tmp_path / f"{kind}.safetensors", kind)
    monkeypatch.setattr(
        checkpoint._CheckpointIndex, "take_unet_state_dict", lambda *a, **k: pytest.fail("weights were read")
    )
    with pytest.raises(CheckpointError, match=rf"{kind}\.safetensors.*cannot be used"):
        load_unet(path, build_sgm, torch.float32)


def test_a_file_without_unet_tensors_is_refused(tmp_path):
    path = write_checkpoint(tmp_path / "vae.safetensors", "refiner", unet_state={})
    with pytest.raises(CheckpointError, match=r"vae\.safetensors.*no UNet tensors"):
        read_unet_state_dict(path)


def test_other_suffixes_are_refused_for_reading(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\0" * 64)
    with pytest.raises(CheckpointError, match=r"model\.bin.*'\.bin'.*\.safetensors"):
        read_unet_state_dict(path)


@pytest.mark.parametrize("dtype", [None, torch.float32, torch.bfloat16])
def test_tensors_of_mixed_dtypes_with_other_tensors_between_them_are_read_exactly(
    tmp_path, refiner_state, dtype
):
    from safetensors.torch import save_file

    mixed = {
        key: value.to(torch.float32 if i % 3 == 0 else torch.bfloat16 if i % 3 == 1 else torch.float16)
        for i, (key, value) in enumerate(sorted(refiner_state.items()))
    }
    tensors = {PREFIX + key: value for key, value in mixed.items()}
    tensors.update({"first_stage_model.a": torch.ones(1000), "zz.b": torch.ones(10, dtype=torch.bfloat16)})
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, str(path))
    runs = checkpoint._contiguous_runs(
        {k: e for k, e in checkpoint.read_safetensors_header(path).items() if k.startswith(PREFIX)}
    )
    assert len(runs) >= 3

    state = read_unet_state_dict(path, dtype)
    assert state.keys() == mixed.keys()
    for key, value in state.items():
        assert value.dtype == (dtype or mixed[key].dtype)
        assert torch.equal(value, mixed[key].to(value.dtype))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only host")
def test_pinned_memory_is_ignored_on_a_host_without_cuda(refiner_path, refiner_state):
    state = read_unet_state_dict(refiner_path, torch.float32, pin_memory=True)
    assert all(not value.is_pinned() for value in state.values())
    assert all(torch.equal(state[key], refiner_state[key].float()) for key in state)
