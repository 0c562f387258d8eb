"""The training closure on images that do not carry it (image=runpod): installed at probe, once per volume.

image.requirements (remote_image/requirements.txt: the full closure, every package ==) is installed with uv by
remote_image/install_closure.sh into <remote workdir>/.lorapod/venvs/<hash>, the hash covering the requirements
file and the Python it is made from (image.base_python). The workdir is /workspace on RunPod: the network
volume when one is mounted, so the next run on that volume finds the venv ready and installs nothing, and
otherwise the container disk. The venv's python is then the run's interpreter (provider.default_python).

It is needed when the config names requirements, neither remote.python nor image.python names an interpreter,
and the provider deploys images (provider.uses_image): for ssh and local the machine's own python is used.
"""
from __future__ import annotations

import hashlib
import posixpath
import shlex
import time
from pathlib import Path
from urllib.parse import urlsplit

from loguru import logger

from engine.context import PROJECT_ROOT, RunContext
from engine.errors import StageError

INSTALLER = PROJECT_ROOT / "remote_image" / "install_closure.sh"
LINE_PREFIX = "lorapod-closure: "  # install_closure.sh's lines for the user
NOTHING_TO_INSTALL = LINE_PREFIX + "nothing to install"
# The images whose closure probe installs have one (RunPod's: python3 is its 3.12): it runs lorapod's stdlib-only
# helpers on the pod before the closure's venv exists.
IMAGE_PYTHON = "python3"
TAIL_LINES = 15  # of the installer's output, in the error when it fails
TIMED_OUT = (124, 137)  # timeout(1)'s status when the limit passed (137: it had to KILL)


def requirements_file(cfg) -> Path | None:
    """image.requirements as a path on this machine (relative to the project), or None when unset."""
    value = cfg.image.requirements
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else PROJECT_ROOT / path


def closure_hash(requirements: Path, python_request: str) -> str:
    """16 hex digits of sha256 over the requirements file and the Python request: a venv per closure and base."""
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(b"\0python=" + python_request.encode())
    return digest.hexdigest()[:16]


def venv_dir(cfg, workdir: str) -> str | None:
    """<workdir>/.lorapod/venvs/<hash> on the pod, or None without requirements (or before they exist: the
    config check reports a missing file)."""
    requirements = requirements_file(cfg)
    if requirements is None or not requirements.is_file():
        return None
    return posixpath.join(str(workdir), ".lorapod", "venvs", closure_hash(requirements, str(cfg.image.base_python)))


def venv_python(cfg, workdir: str) -> str | None:
    folder = venv_dir(cfg, workdir)
    return posixpath.join(folder, "bin", "python") if folder else None


def workdir_root(ctx: RunContext) -> str:
    return str(ctx.cfg.remote.workdir or ctx.provider.default_workdir)


def needed(ctx: RunContext) -> bool:
    cfg = ctx.cfg
    return bool(cfg.image.requirements and not cfg.remote.python and not cfg.image.python
                and getattr(ctx.provider, "uses_image", False))


def stdlib_python(ctx: RunContext) -> str:
    """The interpreter for lorapod's stdlib-only helpers on the pod (the watchdog, hashing uploads). When probe
    installs the closure, its venv may not exist yet when they first run (the watchdog is armed before the
    install, which can take ten minutes), so they use the image's own python3; else the run's interpreter."""
    return IMAGE_PYTHON if needed(ctx) else ctx.remote_python


def install(ctx: RunContext) -> dict:
    """Upload the installer and the requirements into the run's folder and run it, its lines in the log.
    Returns (and records in state.outputs["closure"]) {hash, venv, installed, seconds}."""
    cfg = ctx.cfg
    requirements = requirements_file(cfg)
    venv = venv_dir(cfg, workdir_root(ctx))
    if requirements is None or venv is None:
        raise StageError(f"image.requirements ({cfg.image.requirements}) is not a file on this machine",
                         "set image.requirements to the closure to install (remote_image/requirements.txt)")
    rdir = ctx.remote_dir
    installer, remote_requirements = posixpath.join(rdir, INSTALLER.name), posixpath.join(rdir, "requirements.txt")
    ctx.transport.put(INSTALLER, installer)
    ctx.transport.put(requirements, remote_requirements)
    limit = int(cfg.image.install_timeout_s)
    # coreutils timeout signals the whole process group (uv included); the installer's trap removes the partial
    # venv. Without it a stuck download would hold a billing pod (the heartbeat keeps the watchdog satisfied).
    args = ["timeout", "--kill-after=30", str(limit), "bash", installer, "--venv", venv,
            "--requirements", remote_requirements, "--python", str(cfg.image.base_python), "--wait", str(limit)]
    if cfg.image.index_url:
        args += ["--index-url", str(cfg.image.index_url)]
    logger.info(f"the training closure ({requirements.name}) goes into {venv} on the pod")
    said: list[str] = []

    def show(line: str) -> None:
        said.append(line)
        # The installer's own lines (progress, uv's summaries) for the user; uv's per-package lines in run.log.
        (logger.info if line.startswith(LINE_PREFIX) else logger.debug)(line)

    started = time.monotonic()
    status = ctx.transport.exec(shlex.join(args), on_line=show)
    seconds = round(time.monotonic() - started, 3)
    record = {"hash": posixpath.basename(venv), "venv": venv, "installed": False, "seconds": seconds}
    if status in TIMED_OUT:
        said.append(f"{LINE_PREFIX}error: not finished within image.install_timeout_s ({limit}s): stopped")
    if status != 0:
        ctx.state.outputs["closure"] = {**record, "error": _last_error(said)}
        ctx.save()
        tail = "\n    ".join(said[-TAIL_LINES:]) or "(no output)"
        raise StageError(f"installing the training closure on the pod failed (exit {status}): {_last_error(said)}\n"
                         f"  the installer's last lines:\n    {tail}",
                         "see its words above: image.requirements must be pinned wheels the index has "
                         "(image.index_url; null: PyPI), and image.base_python an interpreter the image has")
    record["installed"] = not any(line.startswith(NOTHING_TO_INSTALL) for line in said)
    ctx.state.outputs["closure"] = record
    ctx.save()
    return record


def _last_error(lines: list[str]) -> str:
    errors = [line[len(LINE_PREFIX):] for line in lines if line.startswith(LINE_PREFIX + "error:")]
    return errors[-1] if errors else (lines[-1] if lines else "it said nothing")


def check_config(cfg, provider_cls) -> list[tuple[str, str]]:
    """The closure's keys, for a provider class (whether it deploys images decides whether they matter)."""
    image, problems = cfg.image, []
    requirements = requirements_file(cfg)
    if requirements is not None and not requirements.is_file():
        problems.append(("image.requirements", f"must be an existing file (relative to the project, or absolute); "
                                               f"{requirements} is not one"))
    uses_image = getattr(provider_cls, "uses_image", False)
    if uses_image and requirements is None and not image.python and not cfg.remote.python:
        problems.append(("image.python", "is null and so is image.requirements: the pod would have no interpreter. "
                                         "Set image.python to the image's interpreter, or image.requirements to "
                                         "the closure probe installs (remote_image/requirements.txt)"))
    if requirements is not None and image.install_timeout_s <= 0:
        problems.append(("image.install_timeout_s", f"must be > 0 seconds (got {image.install_timeout_s})"))
    if requirements is not None and not str(image.base_python or "").strip():
        problems.append(("image.base_python", "must name the Python the closure's venv is made from: a version "
                                              "(3.12) or a path on the pod"))
    if image.index_url:
        url = urlsplit(str(image.index_url))
        if url.scheme not in ("http", "https") or not url.netloc:
            problems.append(("image.index_url", "must be an http(s) URL of a package index (PEP 503), e.g. "
                                                "https://pypi.org/simple, or null for PyPI"))
        elif url.username or url.password:
            problems.append(("image.index_url", "must not carry credentials: the config is written to the run "
                                                "folder (.hydra/) and the URL reaches the pod's command line"))
    return problems
