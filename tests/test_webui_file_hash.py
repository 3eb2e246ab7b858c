"""The refiner's hash for the infotext comes from the read that loads its UNet, goes into the host's
hash cache, and is never computed by a read of its own (host/file_hash.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.standin.refiner_runs import refine, ui_args
from tests.support.counted_reads import CountingFile

KEY = "checkpoint/refiner.safetensors"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ReadCounter:
    """Counts the bytes the UNet's reader takes from each file; ``fail_after`` bytes of a file raise."""

    def __init__(self, monkeypatch, fail_after: int | None = None):
        from sdxl_refiner.core import checkpoint

        self.files: list[tuple[str, CountingFile]] = []
        original = checkpoint._open_for_reading

        def counted(path: Path) -> CountingFile:
            self.files.append((str(path), CountingFile(original(path), fail_after)))
            return self.files[-1][1]

        monkeypatch.setattr(checkpoint, "_open_for_reading", counted)

    @property
    def bytes_read(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for path, file in self.files:
            totals[path] = totals.get(path, 0) + file.bytes_read
        return totals


def test_the_first_refined_image_takes_its_hash_from_the_unets_read_and_the_host_hashes_nothing(webui, monkeypatch):
    webui.write_pair()
    hashes = webui.module("modules.hashes")
    path = webui.models_dir / "refiner.safetensors"
    reads = ReadCounter(monkeypatch)
    first = refine(webui, webui.txt2img(steps=4))
    full = sha256_of(path)
    assert str(path) not in hashes.calculated, "no read of its own for the hash"
    assert reads.bytes_read == {str(path): path.stat().st_size}, "one read of every byte"
    assert hashes.hashes_cache[KEY] == {"mtime": os.path.getmtime(path), "sha256": full}
    assert f"SDXL Refiner: refiner [{full[:10]}]," in first.infotexts[0]
    assert webui.checkpoint(f"refiner [{full[:10]}]").sha256 == full, "the list's entry knows its hash"

    second = refine(webui, webui.txt2img(steps=4))
    assert second.infotexts[0] == first.infotexts[0]
    assert str(path) not in hashes.calculated and reads.bytes_read == {str(path): path.stat().st_size}


def test_a_hash_the_host_has_already_is_used_and_the_read_takes_the_unet_alone(webui, monkeypatch):
    webui.write_pair()
    hashes = webui.module("modules.hashes")
    path = webui.models_dir / "refiner.safetensors"
    webui.checkpoint("refiner.safetensors").calculate_shorthash()
    hashes.calculated.clear()
    reads = ReadCounter(monkeypatch)
    result = refine(webui, webui.txt2img(steps=4))
    assert f"SDXL Refiner: refiner [{sha256_of(path)[:10]}]," in result.infotexts[0]
    assert hashes.calculated == []
    assert 0 < reads.bytes_read[str(path)] < path.stat().st_size


def test_with_no_hashing_nothing_is_hashed_nor_cached(webui, monkeypatch):
    webui.write_pair()
    webui.shared.cmd_opts.no_hashing = True
    path = webui.models_dir / "refiner.safetensors"
    reads = ReadCounter(monkeypatch)
    result = refine(webui, webui.txt2img(steps=4))
    assert "SDXL Refiner: refiner," in result.infotexts[0]
    assert KEY not in webui.module("modules.hashes").hashes_cache
    assert reads.bytes_read[str(path)] < path.stat().st_size


def test_a_file_changed_on_disk_gets_a_new_hash_and_a_new_unet(webui):
    webui.write_pair()
    path = webui.models_dir / "refiner.safetensors"
    before = refine(webui, webui.txt2img(steps=4))
    webui.write_checkpoint("refiner.safetensors", "refiner", seed=7, text_encoder_of="base.safetensors")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = refine(webui, webui.txt2img(steps=4))
    full = sha256_of(path)
    assert f"SDXL Refiner: refiner [{full[:10]}]," in after.infotexts[0]
    assert webui.module("modules.hashes").hashes_cache[KEY]["sha256"] == full
    assert not (after.samples[0] == before.samples[0]).all(), "the changed file's UNet refines the image"


def test_a_read_that_fails_midway_leaves_no_cache_entry_and_the_next_one_hashes(webui, monkeypatch):
    webui.write_pair()
    path = webui.models_dir / "refiner.safetensors"
    hashes = webui.module("modules.hashes")
    with monkeypatch.context() as broken:
        ReadCounter(broken, fail_after=path.stat().st_size // 2)
        with pytest.raises(Exception, match="interrupted"):
            refine(webui, webui.txt2img(steps=4))
    assert KEY not in hashes.hashes_cache
    result = refine(webui, webui.txt2img(steps=4))
    assert hashes.hashes_cache[KEY]["sha256"] == sha256_of(path)
    assert f"SDXL Refiner: refiner [{sha256_of(path)[:10]}]," in result.infotexts[0]
    assert str(path) not in hashes.calculated


def test_a_unet_kept_from_before_whose_hash_the_host_lost_is_hashed_by_the_host_when_the_infotext_is_written(webui):
    webui.write_pair()
    path = webui.models_dir / "refiner.safetensors"
    hashes = webui.module("modules.hashes")
    refine(webui, webui.txt2img(steps=4))
    del hashes.hashes_cache[KEY]
    info = webui.checkpoint("refiner.safetensors")
    info.shorthash = info.sha256 = None
    result = refine(webui, webui.txt2img(steps=4), ui_args(checkpoint=info.title))
    assert f"SDXL Refiner: refiner [{sha256_of(path)[:10]}]," in result.infotexts[0]
    assert hashes.calculated.count(str(path)) == 1


def test_after_the_generation_the_parameters_hold_the_name_and_hash_as_text(webui):
    """The API's ``info`` serialises the parameters as JSON, where a callable would be null."""
    webui.write_pair()
    path = webui.models_dir / "refiner.safetensors"
    p = webui.txt2img(steps=4)
    refine(webui, p)
    assert p.extra_generation_params["SDXL Refiner"] == f"refiner [{sha256_of(path)[:10]}]"
