"""A small client of the WebUI's HTTP API for the live tests and the benchmark (stdlib + Pillow)."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

BASE = os.environ.get("SDXL_REFINER_LIVE_BASE", "tiny-sdxl-base.safetensors")
BASE_COPY = os.environ.get("SDXL_REFINER_LIVE_BASE_COPY", "tiny-sdxl-base-copy.safetensors")
REFINER = os.environ.get("SDXL_REFINER_LIVE_REFINER", "tiny-sdxl-refiner.safetensors")
REFINER_OWN_TEXT = os.environ.get("SDXL_REFINER_LIVE_REFINER_OWN_TEXT", "tiny-sdxl-refiner-own-text.safetensors")
REFINER_WRONG_CONFIG = os.environ.get(
    "SDXL_REFINER_LIVE_REFINER_WRONG_CONFIG", "tiny-sdxl-refiner-wrong-config.safetensors"
)
SD1 = "tiny-sd1.safetensors"
# Forge 2's checkpoints (tests/live/make_forge_checkpoints.py): its loader wants full-size text encoders
FORGE_BASE = "tiny-forge-base.safetensors"
FORGE_BASE_COPY = "tiny-forge-base-copy.safetensors"
FORGE_REFINER = "tiny-forge-refiner.safetensors"
FORGE_REFINER_OWN_TEXT = "tiny-forge-refiner-own-text.safetensors"
FORGE_BASE_FINETUNE = "tiny-forge-base-finetune.safetensors"
REFINER_FP16 = "tiny-sdxl-refiner-fp16.safetensors"
REFINER_ROUNDED = "tiny-sdxl-refiner-rounded.safetensors"
REFINER_SPACED = "sub folder/tiny sdxl refiner.safetensors"
SCRIPT_KEY = "sdxl refiner"


class ApiError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body


class WebUIApi:
    def __init__(self, url: str, timeout: float = 600.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def call(self, path: str, payload: dict | None = None, method: str | None = None) -> dict:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method or ("POST" if data is not None else "GET"),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read().decode()
        except urllib.error.HTTPError as error:
            raise ApiError(error.code, error.read().decode(errors="replace")) from error
        return json.loads(body) if body else {}

    @contextmanager
    def options(self, **options: object) -> Iterator[None]:
        """Sets WebUI options for the block and puts the old values back, however it ends
        (``override_settings`` would keep an option never saved before)."""
        saved = self.call("/sdapi/v1/options")
        self.call("/sdapi/v1/options", options)
        try:
            yield
        finally:
            self.call("/sdapi/v1/options", {name: saved.get(name) for name in options})

    def txt2img(self, **fields) -> dict:
        return self.call("/sdapi/v1/txt2img", request(**fields))

    def img2img(self, **fields) -> dict:
        return self.call("/sdapi/v1/img2img", request(**fields))

    def png_info(self, response: dict, index: int = 0) -> dict:
        """What the WebUI reads back from a returned PNG (the infotext it wrote, parsed)."""
        return self.call("/sdapi/v1/png-info", {"image": "data:image/png;base64," + response["images"][index]})

    def xyz_axis(self, label: str, is_img2img: bool = False) -> int:
        """An X/Y/Z axis is sent by its index in the tab's list, which depends on the extensions."""
        for script in self.call("/sdapi/v1/script-info"):
            if script["name"] == "x/y/z plot" and script["is_img2img"] == is_img2img:
                return script["args"][0]["choices"].index(label)
        raise LookupError("the WebUI has no x/y/z plot script")


def stopped_at(api: WebUIApi, generate: Callable[[], dict], step: int, stop: str = "interrupt",
               timeout: float = 300.0) -> int:
    """Runs ``generate`` (one request) in a thread and stops it (``interrupt`` or ``skip``) once the
    host reports the sampling step ``step``; returns the step reached. The request itself must
    still answer: an error it raised is raised here."""
    finished: dict[str, object] = {}

    def run() -> None:
        try:
            finished["response"] = generate()
        except Exception as error:  # raised below, in the test's thread
            finished["error"] = error

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + timeout  # a busy machine samples slowly; a stalled one fails the caller's check
    reached = 0
    while time.monotonic() < deadline and worker.is_alive():
        reached = api.call("/sdapi/v1/progress?skip_current_image=true").get("state", {}).get("sampling_step", 0)
        if reached >= step:
            break
        time.sleep(0.02)
    api.call(f"/sdapi/v1/{stop}", {})
    if stop != "interrupt":
        api.call("/sdapi/v1/interrupt", {})  # a skip ends the current image only
    worker.join(timeout=timeout)
    if "error" in finished:
        raise AssertionError(f"the stopped request failed: {finished['error']}")
    return reached


def request(*, refiner: dict | list | None = None, **fields) -> dict:
    """A small deterministic generation on the base checkpoint; ``refiner`` is our script's args."""
    payload = {
        "prompt": "a red fox in the snow", "negative_prompt": "blurry", "steps": 8, "width": 64,
        "height": 64, "seed": 1234, "sampler_name": "Euler", "scheduler": "Automatic", "cfg_scale": 5.0,
        "batch_size": 1, "n_iter": 1, "send_images": True, "save_images": False,
        "override_settings": {"sd_model_checkpoint": BASE}, "override_settings_restore_afterwards": True,
    }
    payload.update(fields)
    if refiner is not None:
        args = refiner if isinstance(refiner, list) else [refiner]
        payload.setdefault("alwayson_scripts", {})[SCRIPT_KEY] = {"args": args}
    return payload


def ours(checkpoint: str = REFINER, steps_percent: float = 20.0, **named) -> dict:
    return {"enabled": True, "checkpoint": checkpoint, "steps_percent": steps_percent, **named}


def pixels(response: dict) -> list[bytes]:
    """Decoded RGB pixels of every image: PNG bytes also carry the infotext, pixels do not."""
    from PIL import Image

    return [Image.open(io.BytesIO(base64.b64decode(image.split(",", 1)[-1]))).convert("RGB").tobytes()
            for image in response["images"]]


def infotext(response: dict) -> str:
    return json.loads(response["info"])["infotexts"][0]


def small_png(width: int = 64, height: int = 64) -> str:
    from PIL import Image

    image = Image.new("RGB", (width, height))
    image.putdata([((x * 4) % 256, (y * 4) % 256, 128) for y in range(height) for x in range(width)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
