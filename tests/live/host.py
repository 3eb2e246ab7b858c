"""Build, start and stop a real WebUI 1.10.1, Forge 2 or Forge Neo for the live tests, offline where the sources are at hand.

The offline suite tests the binding against a stand-in written from the same assumptions as the
code; only a real WebUI tests those assumptions. This module makes one from nothing, the way a
user's install looks (the WebUI's own pinned packages, this checkout in ``extensions/``), and
keeps it outside the clone so that later runs reuse it:

- the sources from ``../shared/hosts/webui-1.10.1.tar.gz`` when that archive exists, else cloned
  at the commits ``modules/launch_utils.py`` pins (network needed);
- a virtual environment of its own with the WebUI's ``requirements_versions.txt``, under
  constraints that keep the torch this project tests with;
- the tiny checkpoints of ``make_tiny_checkpoints.py``, written with that environment's Python.

Forge 2 is made the same way from ``../shared/hosts/forge-dfdcbab.tar.gz`` (``--forge``), with its
own requirements and flags and the checkpoints of ``make_forge_checkpoints.py``. Forge Neo is made
from ``../shared/hosts/forge-neo-f95f632.tar.gz`` (``--neo``; that tree has no public commit to clone)
and loads Forge 2's checkpoints as they are: it links the Forge host's files when that host is built,
and runs the same script otherwise.

Standard library only: it runs from the project's test environment and drives the WebUI's.

    python -m tests.live.host build           # prints the folder for SDXL_REFINER_HOST; exit 3: no sources
    python -m tests.live.host build --forge   # the same for Forge 2 (SDXL_REFINER_FORGE_HOST)
    python -m tests.live.host build --neo     # the same for Forge Neo
    python -m tests.live.host run -- CMD...   # starts it, runs CMD with WEBUI_URL, WEBUI_CONSOLE and WEBUI_PID set, stops it
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.live.make_forge_checkpoints import STAMP as CHECKPOINTS_DONE
from tests.support.host_sources import FORGE_ARCHIVE, NEO_ARCHIVE
from tests.support.host_sources import REPO_ROOT as REPOSITORY
from tests.support.host_sources import WEBUI_ARCHIVE as ARCHIVE

# Not under a dot-folder such as ~/.cache: gradio 3 refuses to serve any file whose absolute path has
# a part starting with "." (403 for the WebUI's own script.js), and the page then never starts.
CACHE = Path(os.environ.get("SDXL_REFINER_HOST_CACHE", "/var/tmp/sdxl-refiner-tests/webui-host"))
FOLDER = "webui-1.10.1"
EXTENSION_NAME = "sd-webui-sdxl-refiner"
FAULT_EXTENSION_NAME = "sdxl-refiner-fault"
TRACE_EXTENSION_NAME = "sdxl-refiner-trace"
BASE_CHECKPOINT = "tiny-sdxl-base.safetensors"
NO_SOURCES = 3

WEBUI = ("https://github.com/AUTOMATIC1111/stable-diffusion-webui.git", "82a973c04367123ae98bd9abdf80d9eda9b910e2")
PINNED_REPOSITORIES = {
    "generative-models": ("https://github.com/Stability-AI/generative-models.git",
                          "45c443b316737a4ab6e40413d7794a7f5657c19f"),
    "k-diffusion": ("https://github.com/crowsonkb/k-diffusion.git", "ab527a9a6d347f364e3d185ba6d714e22d80cb3c"),
    "stable-diffusion-stability-ai": ("https://github.com/Stability-AI/stablediffusion.git",
                                      "cf1d67a6fd5ea1aa600c4df58e5b47da45f6bdbf"),
    "stable-diffusion-webui-assets": ("https://github.com/AUTOMATIC1111/stable-diffusion-webui-assets.git",
                                      "6f7db241d2f8ba7457bac5ca9753331f0c266917"),
}
# The project's torch, kept: the WebUI's list would pull another one through torchvision. Its own
# setuptools pin conflicts with that torch, and below 81 keeps the pkg_resources that
# pytorch_lightning 1.9.4 and clip import.
CONSTRAINTS = "torch==2.14.1\ntorchvision==0.29.1\nsetuptools>=77.0.3,<81\n"
PROVIDED = {"torch", "setuptools"}  # installed at the versions CONSTRAINTS holds
EXTRA_REQUIREMENTS = ("clip-anytorch",)  # k-diffusion imports `clip`; the WebUI installs it at first start
LAUNCH_FLAGS = (
    "--skip-prepare-environment", "--skip-torch-cuda-test", "--skip-version-check", "--no-download-sd-model",
    "--use-cpu", "all", "--precision", "full", "--no-half", "--no-half-vae", "--api",
)
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# the tests read the console as it is written: what a request printed is there when it returns
CONSOLE_ENV = {"PYTHONUNBUFFERED": "1"}
# The default live preview tries a download; the base is the model every request starts from.
CONFIG = {"show_progress_type": "Approx cheap", "sd_model_checkpoint": BASE_CHECKPOINT}

Log = Callable[[str], None]


@dataclass(frozen=True)
class HostKind:
    """What differs between the hosts: sources, packages, flags, options and test checkpoints."""

    name: str
    folder: str  # the archive's one top folder, and the host's folder under the cache
    archive: Path
    cache_variable: str  # names another cache folder
    cache: Path
    main: tuple[str, str] | None  # the clone fallback: URL and commit; None: the archive alone
    repositories: dict[str, tuple[str, str]]  # cloned into repositories/, as its launcher pins them
    launch_flags: tuple[str, ...]
    config: dict[str, object]
    extra_requirements: tuple[str, ...]
    checkpoint_script: str
    script_flag: str  # how the checkpoint script is told the host's folder
    requirements_file: str = "requirements_versions.txt"  # the host's pinned list, in its folder
    # installed alone before that list, as its launcher does (their pins conflict with the list's)
    first_requirements: tuple[str, ...] = ()
    # another host whose test checkpoints this one loads as they are: linked from there once built
    checkpoints_from: HostKind | None = None


WEBUI_KIND = HostKind(
    name="WebUI 1.10.1", folder=FOLDER, archive=ARCHIVE, cache_variable="SDXL_REFINER_HOST_CACHE", cache=CACHE,
    main=WEBUI, repositories=PINNED_REPOSITORIES, launch_flags=LAUNCH_FLAGS, config=CONFIG,
    extra_requirements=EXTRA_REQUIREMENTS, checkpoint_script="make_tiny_checkpoints.py", script_flag="--webui",
)
FORGE = HostKind(
    name="Forge 2",
    folder="forge-dfdcbab",
    archive=FORGE_ARCHIVE,
    cache_variable="SDXL_REFINER_FORGE_HOST_CACHE",
    cache=Path(os.environ.get("SDXL_REFINER_FORGE_HOST_CACHE", "/var/tmp/sdxl-refiner-tests/forge-host")),
    main=("https://github.com/lllyasviel/stable-diffusion-webui-forge.git", "dfdcbab685e57677014f05a3309b48cc87383167"),
    repositories={
        "huggingface_guess": ("https://github.com/lllyasviel/huggingface_guess.git",
                              "84826248b49bb7ca754c73293299c4d4e23a548d"),
        "stable-diffusion-webui-assets": PINNED_REPOSITORIES["stable-diffusion-webui-assets"],
    },
    # Forge's backend ignores --use-cpu and the precision flags: it computes in what it picks for the device
    launch_flags=("--skip-prepare-environment", "--skip-torch-cuda-test", "--skip-version-check",
                  "--no-download-sd-model", "--always-cpu", "--api"),
    # sd_model_checkpoint is the same option in Forge (its main_entry reads and sets it); without
    # forge_preset it starts in its "sd" preset, whose UI defaults are SD 1.5's
    config={**CONFIG, "sd_model_checkpoint": "tiny-forge-base.safetensors", "forge_preset": "xl"},
    # its soft-inpainting script imports joblib, which its requirements omit; `clip` is imported only
    # by the CLIP interrogator (k-diffusion is vendored), so clip-anytorch is not needed
    extra_requirements=("joblib",),
    checkpoint_script="make_forge_checkpoints.py",
    script_flag="--forge",
)
NEO = HostKind(
    name="Forge Neo",
    folder="forge-neo-f95f632",
    archive=NEO_ARCHIVE,
    cache_variable="SDXL_REFINER_NEO_HOST_CACHE",
    cache=Path(os.environ.get("SDXL_REFINER_NEO_HOST_CACHE", "/var/tmp/sdxl-refiner-tests/neo-host")),
    # the archive is a redistribution of the neo branch (its webui/ at f95f632, backend/huggingface/
    # from de2193d), not one upstream commit: there is nothing pinned to clone
    main=None,
    repositories={},  # huggingface_guess, k_diffusion and the assets ship inside it
    # --cpu rather than --always-cpu; it has no --no-download-sd-model; it asks for Python 3.13
    launch_flags=("--skip-prepare-environment", "--skip-torch-cuda-test", "--skip-version-check",
                  "--skip-python-version-check", "--cpu", "--api"),
    # without VERSION_UID it stops at a "Press Enter" prompt (modules/launch_utils.py verify_version);
    # the page's preset load sets the checkpoint from forge_checkpoint_<preset>
    config={**FORGE.config, "VERSION_UID": "PY313", "forge_checkpoint_xl": FORGE.config["sd_model_checkpoint"]},
    extra_requirements=(),  # joblib is in its list; `clip` is not imported
    checkpoint_script="make_forge_checkpoints.py",
    script_flag="--forge",
    requirements_file="requirements.txt",
    # its launcher's GRADIO_PACKAGE: gradio 4.40 wants Pillow below 11, its list pins 12.2
    first_requirements=("gradio==4.40.0", "gradio_rangeslider==0.0.8"),
    checkpoints_from=FORGE,
)
KINDS = {"webui": WEBUI_KIND, "forge": FORGE, "neo": NEO}


def to_stderr(line: str) -> None:
    """Progress goes to stderr: ``build`` prints the host's folder alone on stdout, for scripts."""
    print(line, file=sys.stderr, flush=True)


class NoSources(RuntimeError):
    """Neither the archive nor network access: the live tests cannot have a host."""


@dataclass(frozen=True)
class Install:
    """Where a built host lives: the WebUI folder and the virtual environment it runs in."""

    root: Path
    kind: HostKind = WEBUI_KIND

    @property
    def webui(self) -> Path:
        return self.root / self.kind.folder

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"


def build(root: Path | None = None, archive: Path | None = None, log: Log = to_stderr,
          kind: HostKind = WEBUI_KIND) -> Install:
    """Makes (or brings up to date) the host under ``root``; every step is skipped when done."""
    root = root or kind.cache
    archive = archive or kind.archive
    install = Install(root, kind)
    hidden = [part for part in install.webui.absolute().parts if part.startswith(".")]
    if hidden:
        raise ValueError(f"the WebUI cannot live in {install.webui}: gradio serves no file below a folder "
                         f"whose name starts with a dot ({hidden[0]}); choose another {kind.cache_variable}")
    root.mkdir(parents=True, exist_ok=True)
    if not (install.webui / "launch.py").exists():
        unpack(archive, root, log, kind.folder) if archive.exists() else clone(install.webui, log, kind)
    install_requirements(install, log)
    write_checkpoints(install, log)
    write_loras(install, log)
    link_extension(install.webui, REPOSITORY)
    return install


def unpack(archive: Path, root: Path, log: Log, folder: str = FOLDER) -> None:
    log(f"host: unpacking {archive}")
    partial = root / (folder + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(partial, filter="data")
    (partial / folder).rename(root / folder)
    partial.rmdir()


def clone(webui: Path, log: Log, kind: HostKind = WEBUI_KIND) -> None:
    if kind.main is None:
        raise NoSources(f"no {kind.archive}, and {kind.name} has no pinned public commit to clone")
    log(f"host: no {kind.archive.name}; cloning the pinned commits")
    partial = webui.with_name(kind.folder + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        checkout(*kind.main, partial)
        for name, (url, commit) in kind.repositories.items():
            checkout(url, commit, partial / "repositories" / name)
    except (OSError, subprocess.CalledProcessError) as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise NoSources(f"neither {kind.archive} nor the network to clone {kind.name} ({error})") from error
    partial.rename(webui)


def checkout(url: str, commit: str, folder: Path) -> None:
    folder.mkdir(parents=True)
    for command in (["init", "-q"], ["fetch", "-q", "--depth", "1", url, commit], ["checkout", "-q", "FETCH_HEAD"]):
        subprocess.run(["git", *command], cwd=folder, check=True, timeout=600, stdin=subprocess.DEVNULL)


def requirements(webui: Path, extra: Sequence[str] = EXTRA_REQUIREMENTS,
                 file_name: str = "requirements_versions.txt") -> list[str]:
    """The WebUI's pinned list without torch and its setuptools pin, plus what its launcher adds."""
    wanted = []
    for line in (webui / file_name).read_text().splitlines():
        requirement = line.split("#")[0].strip()
        if requirement and re.split(r"[=<>~!\[ ]", requirement)[0].lower() not in PROVIDED:
            wanted.append(requirement)
    return [*wanted, *extra]


def install_requirements(install: Install, log: Log) -> None:
    kind = install.kind
    wanted = requirements(install.webui, kind.extra_requirements, kind.requirements_file)
    stamp = install.root / "venv" / "sdxl-refiner-requirements.sha256"
    digest = hashlib.sha256("\n".join([*kind.first_requirements, *wanted, CONSTRAINTS]).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    if not install.python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(install.root / "venv")], check=True)
    log(f"host: installing {install.kind.name}'s requirements (a few minutes, once)")
    started = time.monotonic()
    (install.root / "constraints.txt").write_text(CONSTRAINTS)
    (install.root / "requirements.txt").write_text("\n".join(wanted) + "\n")
    pip = [str(install.python), "-m", "pip", "install", "-qq"]
    quietly([*pip, "--upgrade", "pip", "setuptools>=77.0.3,<81", "wheel"])
    quietly([*pip, "torch==2.14.1", "torchvision==0.29.1"])
    if kind.first_requirements:
        quietly([*pip, *kind.first_requirements, "-c", str(install.root / "constraints.txt")])
    quietly([*pip, "-r", str(install.root / "requirements.txt"), "-c", str(install.root / "constraints.txt")])
    stamp.write_text(digest)
    log(f"host: requirements installed in {time.monotonic() - started:.0f} s")


def quietly(command: list[str], env: dict[str, str] | None = None) -> str:
    """pip's warnings fill a CI log by the hundred (and the WebUI's imports add more): the output
    is shown only when the command fails. Returns its stdout, for a summary line."""
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        sys.stderr.write(done.stdout[-6000:] + done.stderr[-6000:])
        raise subprocess.CalledProcessError(done.returncode, command)
    return done.stdout


def write_checkpoints(install: Install, log: Log) -> None:
    """Runs every time: the script leaves files whose bytes did not change untouched, so the
    WebUI's cached hashes stay valid, and a changed generator reaches the next run."""
    models = install.webui / "models" / "Stable-diffusion"
    models.mkdir(parents=True, exist_ok=True)
    source = install.kind.checkpoints_from
    if source is not None:
        shared = Install(source.cache, source).webui / "models" / "Stable-diffusion"
        # the script writes its stamp after the last file: a set still being written is not shared
        if (shared / CHECKPOINTS_DONE).is_file():
            log(f"host: {link_checkpoints(shared, models)} checkpoints linked from {source.name}'s {shared}")
            return
    script = REPOSITORY / "tests" / "live" / install.kind.checkpoint_script
    output = quietly([str(install.python), str(script), str(models), install.kind.script_flag, str(install.webui)],
                     env={**os.environ, **OFFLINE_ENV})
    summary = [line for line in output.splitlines() if line.startswith("Forge checkpoints")]
    log(f"host: {summary[-1]}" if summary else f"host: tiny checkpoints in {models}")


def write_loras(install: Install, log: Log) -> None:
    """The tiny LoRA files for this host's base and refiner; like the checkpoints, every time."""
    base = install.kind.config["sd_model_checkpoint"]
    script = REPOSITORY / "tests" / "live" / "make_tiny_loras.py"
    output = quietly([str(install.python), str(script), str(install.webui / "models"), "--base", base,
                      "--refiner", base.replace("-base", "-refiner")], env={**os.environ, **OFFLINE_ENV})
    log(f"host: {output.strip().splitlines()[-1]}")


def link_checkpoints(source: Path, models: Path) -> int:
    """Each checkpoint of ``source`` (and its ``.yaml``) in ``models``: a hard link where both lie on
    one file system (no copy of gigabytes, and the same bytes if the other host's folder goes), else a
    symbolic link; a link to an older version of a file is replaced. Returns how many checkpoints."""
    files = sorted(source.glob("*.safetensors"))
    for file in [*files, *(file.with_suffix(".yaml") for file in files)]:
        target = models / file.name
        if not file.is_file() or (target.exists() and os.path.samefile(file, target)):
            continue
        if target.is_symlink() or target.exists():
            target.unlink()
        try:
            os.link(file, target)
        except OSError:
            target.symlink_to(file)
    return len(files)


def link_extension(webui: Path, checkout_folder: Path) -> None:
    """This checkout, as the WebUI sees an installed extension, and beside it the test-only extensions
    that break our hooks on request (``tests/live/faults.py``) and trace the sampler's steps
    (``trace_extension``); another checkout's links are replaced."""
    link_folder(webui / "extensions" / EXTENSION_NAME, checkout_folder)
    link_folder(webui / "extensions" / FAULT_EXTENSION_NAME, checkout_folder / "tests" / "live" / "fault_extension")
    link_folder(webui / "extensions" / TRACE_EXTENSION_NAME, checkout_folder / "tests" / "live" / "trace_extension")


def link_folder(link: Path, checkout_folder: Path) -> None:
    link.parent.mkdir(exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.resolve() == checkout_folder.resolve():
            return
        link.unlink() if link.is_symlink() else shutil.rmtree(link)
    link.symlink_to(checkout_folder, target_is_directory=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Running:
    url: str
    flags: tuple[str, ...]
    process: subprocess.Popen
    log: Path


@contextmanager
def started(install: Install, flags: Sequence[str] = (), timeout: float = 300.0, log: Log = to_stderr,
            options: dict[str, object] | None = None) -> Iterator[Running]:
    """A WebUI serving on a free port, stopped by its process group however the block ends."""
    running = start(install, flags, timeout, log, options)
    try:
        yield running
    finally:
        stop(running)


def start(install: Install, flags: Sequence[str] = (), timeout: float = 300.0, log: Log = to_stderr,
          options: dict[str, object] | None = None) -> Running:
    """Starts from a fresh ``config.json`` (the kind's, with ``options`` over it) so that no earlier
    run's options leak into this one."""
    (install.webui / "config.json").write_text(json.dumps({**install.kind.config, **(options or {})}))
    port = free_port()
    console = install.root / f"console-{port}.log"
    command = [str(install.python), "launch.py", *install.kind.launch_flags, *flags, "--server-name", "127.0.0.1",
               "--port", str(port)]
    log(f"host: starting {install.kind.name} on port {port} {' '.join(flags)}".rstrip())
    with console.open("wb") as output:
        process = subprocess.Popen(command, cwd=install.webui, stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env={**os.environ, **OFFLINE_ENV, **CONSOLE_ENV},
                                   start_new_session=True)
    running = Running(f"http://127.0.0.1:{port}", tuple(flags), process, console)
    try:
        wait_for_startup(running, timeout)
    except BaseException:
        stop(running)
        raise
    return running


def wait_for_startup(running: Running, timeout: float) -> None:
    """The WebUI breaks when asked anything before it prints ``Startup time:``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = running.log.read_text(errors="replace")
        if "Startup time:" in text:
            return
        if running.process.poll() is not None:
            raise RuntimeError(f"the WebUI exited with {running.process.returncode} before starting:\n{text[-6000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"the WebUI did not start in {timeout:.0f} s:\n{running.log.read_text(errors='replace')[-6000:]}")


def stop(running: Running, grace: float = 20.0) -> None:
    if running.process.poll() is None:
        for sent in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(running.process.pid, sent)
            except ProcessLookupError:
                break
            try:
                running.process.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue


def bytes_read(running: Running) -> int:
    """Every byte the host process has read so far through read calls (``rchar``: from the disk or
    the page cache alike), for tests that a file is not read again."""
    for line in Path(f"/proc/{running.process.pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise LookupError(f"no rchar in /proc/{running.process.pid}/io")


def console_tail(running: Running, characters: int = 6000) -> str:
    return running.log.read_text(errors="replace")[-characters:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A real WebUI 1.10.1 (or Forge 2, or Forge Neo) for the live tests.")
    commands = parser.add_subparsers(dest="command", required=True)
    built = commands.add_parser("build", help="build the host (cached) and print its folder")
    run = commands.add_parser("run", help="build, start, run a command with WEBUI_URL set, stop")
    for command in (built, run):
        command.add_argument("--host", choices=sorted(KINDS), default="webui", help="which host (default: webui)")
        command.add_argument("--forge", dest="host", action="store_const", const="forge", help="the same as --host forge")
        command.add_argument("--neo", dest="host", action="store_const", const="neo", help="the same as --host neo")
    run.add_argument("--flag", action="append", default=[], help="an extra WebUI flag, e.g. --medvram")
    run.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                     help="an option in its config.json at start, e.g. show_refiner=true")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    arguments = parser.parse_args(argv)
    try:
        install = build(kind=KINDS[arguments.host])
    except NoSources as error:
        print(f"host: {error}", file=sys.stderr)
        return NO_SOURCES
    if arguments.command == "build":
        print(install.root)
        return 0
    cmd = [part for part in arguments.cmd if part != "--"] or ["sleep", "infinity"]
    options = {key: json.loads(value) for key, value in (option.split("=", 1) for option in arguments.option)}
    with started(install, arguments.flag, options=options) as running:
        print(f"host: serving at {running.url}; console: {running.log}")
        environment = {**os.environ, "WEBUI_URL": running.url, "WEBUI_CONSOLE": str(running.log),
                       "WEBUI_PID": str(running.process.pid)}
        return subprocess.run(cmd, env=environment, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
