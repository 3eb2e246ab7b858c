"""The UNet's read hashes the whole file on the way: the WebUI's sha256, in one sequential pass."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from sdxl_refiner.core import checkpoint
from sdxl_refiner.core.checkpoint import read_unet_state_dict
from sdxl_refiner.core.errors import CheckpointError
from sdxl_refiner.core.file_digest import FileDigest
from tests.support.checkpoints import write_checkpoint, write_pickle_checkpoint
from tests.support.counted_reads import CountingFile


@pytest.fixture
def opened(monkeypatch) -> list[CountingFile]:
    files: list[CountingFile] = []
    original = checkpoint._open_for_reading

    def counting(path: Path, fail_after: int | None = None):
        files.append(CountingFile(original(path), getattr(counting, "fail_after", None)))
        return files[-1]

    monkeypatch.setattr(checkpoint, "_open_for_reading", counting)
    return files


def layered_checkpoint(tmp_path: Path) -> Path:
    """UNet tensors in two dtypes (two runs), other tensors before, between and after them."""
    path = write_checkpoint(tmp_path / "source.safetensors", "refiner", filler_bytes=50_000)
    tensors = load_file(str(path))
    unet_keys = sorted(key for key in tensors if key.startswith("model.diffusion_model."))
    tensors[unet_keys[len(unet_keys) // 2]] = tensors[unet_keys[len(unet_keys) // 2]].float()
    tensors["first_stage_model.decoder.conv_in.weight"] = torch.randn(64, 4, 3, 3)
    tensors["model.diffusion_model_ema.x"] = torch.randn(1000)  # sorts inside the UNet's keys' range
    tensors["model_ema.decay"] = torch.tensor(0.9999)
    layered = tmp_path / "layered.safetensors"
    save_file(tensors, str(layered), metadata={"format": "pt"})
    return layered


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("dtype", [None, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [checkpoint.READ_CHUNK_BYTES, 4096, 777])
def test_the_read_that_takes_the_unet_hashes_every_byte_of_the_file_once(tmp_path, monkeypatch, opened, dtype, chunk):
    monkeypatch.setattr(checkpoint, "READ_CHUNK_BYTES", chunk)
    path = layered_checkpoint(tmp_path)
    completed: list[str] = []
    digest = FileDigest(path.stat().st_size, completed.append)
    hashed = read_unet_state_dict(path, dtype, digest=digest)
    assert digest.hexdigest == sha256_of(path) and completed == [digest.hexdigest]
    assert opened[-1].bytes_read == path.stat().st_size, "each byte read once, none skipped"
    plain = read_unet_state_dict(path, dtype)
    assert opened[-1].bytes_read < path.stat().st_size, "without a digest only the UNet's runs are read"
    assert hashed.keys() == plain.keys()
    assert all(torch.equal(hashed[key], plain[key]) and hashed[key].dtype == plain[key].dtype for key in plain)


def test_the_reads_are_large_sequential_ranges(tmp_path, opened):
    path = write_checkpoint(tmp_path / "r.safetensors", "refiner", filler_bytes=3_000_000)
    read_unet_state_dict(path, digest=FileDigest(path.stat().st_size))
    assert opened[-1].reads <= 8, "a few reads of up to READ_CHUNK_BYTES each, not one per tensor"


def test_a_read_that_stops_midway_completes_no_digest(tmp_path, opened, monkeypatch):
    path = write_checkpoint(tmp_path / "r.safetensors", "refiner", filler_bytes=200_000)
    completed: list[str] = []
    digest = FileDigest(path.stat().st_size, completed.append)
    original = checkpoint._open_for_reading
    monkeypatch.setattr(checkpoint, "_open_for_reading",
                        lambda p: CountingFile(original(p), fail_after=path.stat().st_size // 2))
    with pytest.raises(CheckpointError, match=r"could not be read \(interrupted\)"):
        read_unet_state_dict(path, digest=digest)
    assert digest.hexdigest is None and completed == []


def test_a_digest_that_saw_fewer_bytes_than_the_file_holds_is_not_complete():
    completed: list[str] = []
    digest = FileDigest(10, completed.append)
    digest.update(b"123456789")
    digest.finish()
    assert digest.hexdigest is None and completed == []
    digest.update(b"0")
    digest.finish()
    digest.finish()
    assert completed == [hashlib.sha256(b"1234567890").hexdigest()] and digest.hexdigest == completed[0]


def test_a_pickled_checkpoint_is_loaded_and_its_digest_left_to_the_host(tmp_path):
    path = write_pickle_checkpoint(tmp_path / "r.ckpt", "refiner")
    digest = FileDigest(path.stat().st_size)
    assert read_unet_state_dict(path, digest=digest)
    assert digest.hexdigest is None


class Collected:
    """A digest that keeps the bytes it is given, to compare them with the file's."""

    def __init__(self) -> None:
        self.data = bytearray()

    def update(self, data) -> None:
        self.data += data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(0, 300), length=st.one_of(st.none(), st.integers(0, 300)), chunk=st.integers(1, 64))
def test_the_bytes_between_the_unets_runs_are_hashed_exactly_up_to_the_end_asked(
    tmp_path, monkeypatch, start: int, length: int | None, chunk: int
):
    data = bytes(range(256)) + bytes(range(100))
    path = tmp_path / "gaps.bin"
    path.write_bytes(data)
    monkeypatch.setattr(checkpoint, "READ_CHUNK_BYTES", chunk)
    end = None if length is None else min(start + length, len(data))
    collected = Collected()
    with path.open("rb") as file:
        file.seek(min(start, len(data)))
        checkpoint._hash_through(file, end, collected)
        assert file.tell() == (len(data) if end is None else max(end, min(start, len(data))))
    assert bytes(collected.data) == data[min(start, len(data)):end]
