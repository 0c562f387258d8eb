"""build: make sure the image the pod runs exists, building and pushing it only when the registry lacks it.

Only an image lorapod builds (image.context set) is ever built, and only for a provider that deploys images.
Its tag is the content hash of the build context (engine.image), so the registry check usually finds the
image and the stage ends in one HEAD request. The reference it settles on is stored as
state.outputs["image_ref"]; the provider reads it through engine.image.resolved_image_ref().
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import deque
from pathlib import Path

from loguru import logger

from engine import registry
from engine.context import RunContext
from engine.errors import StageError
from engine.image import DOCKER_HUB, context_dir, image_ref, parse_ref
from engine.stage import BaseStage

# buildkit's plain progress: "#5 [builder 2/4] RUN ...", "#5 DONE 12.3s" are steps; "#5 1.234 ..." is output.
_STEP_LINE = re.compile(r"#\d+ (?!\d+\.\d+ )")
TAIL_LINES = 25
SKIP_HINT = "or deploy a tag that was already pushed: build.skip=true image.tag=<tag>"


class Build(BaseStage):
    @staticmethod
    def check_config(cfg) -> list[tuple[str, str]]:
        image = cfg.image
        if cfg.build.skip and image.context and not (image.tag or image.ref):
            return [("build.skip", "needs an explicit image.tag (or image.ref): without a build, nothing makes "
                                   "the content-hash tag exist")]
        return []

    def run(self, ctx: RunContext) -> None:
        provider, image, build = ctx.provider, ctx.cfg.image, ctx.cfg.build
        if not getattr(provider, "uses_image", False):
            where = "this machine's interpreter" if provider.name == "local" else "the machine as it is"
            logger.info(f"nothing to build: provider={provider.name} runs on {where}, not on an image")
            return
        ref = image_ref(image)
        if image.ref:
            logger.info(f"nothing to build: image.ref is set, deploying {ref} as it is")
        elif context_dir(image) is None:
            logger.info(f"nothing to build: image={image.name} is a published image ({ref})")
        elif build.skip:
            logger.info(f"build.skip=true: deploying {ref} without asking the registry")
        elif registry.manifest_exists(parse_ref(ref), build.registry_url, build.timeout_s):
            logger.info(f"{ref} is in the registry: nothing to build")
        else:
            logger.info(f"{ref} is not in the registry: building it for {build.platform} and pushing it")
            docker_build(ref, context_dir(image), build.platform)
            logger.info(f"pushed {ref}")
        ctx.state.outputs["image_ref"] = ref


def docker_build(ref: str, context: Path, platform: str) -> None:
    docker = shutil.which("docker")
    if docker is None:
        raise StageError(f"{ref} has to be built, but there is no `docker` on PATH",
                         f"install Docker with the buildx plugin and run `docker login`, {SKIP_HINT}")
    if subprocess.run([docker, "buildx", "version"], capture_output=True).returncode != 0:
        raise StageError("`docker buildx` is not available", f"install Docker's buildx plugin, {SKIP_HINT}")
    registry_host = parse_ref(ref).registry
    if not docker_logged_in(registry_host):
        raise StageError(f"docker is not logged in to {registry_host}, so it cannot push {ref}",
                         f"run `docker login {registry_host}` with an account that may push there, "
                         f"or set image.repository to one you own, {SKIP_HINT}")
    command = [docker, "buildx", "build", "--platform", platform, "--push", "--progress", "plain",
               "--tag", ref, "--file", str(context / "Dockerfile"), str(context)]
    logger.info("$ docker " + " ".join(command[1:]))
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:
        for raw in proc.stdout:
            line = raw.rstrip()
            tail.append(line)
            (logger.info if _STEP_LINE.match(line) else logger.debug)(line)
    if proc.returncode != 0:
        shown = "\n".join(f"  | {line}" for line in tail)
        raise StageError(f"docker buildx build failed (exit {proc.returncode}) for {ref}; its last lines:\n{shown}",
                         "fix what those lines say (the whole output is in run.log) and run again")


def docker_logged_in(host: str) -> bool:
    """Whether docker's config holds credentials for `host`. A credential store hides which registries it
    knows, so one counts as logged in: a push it cannot do then fails with docker's own message."""
    config_dir = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        config = json.loads((config_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if config.get("credsStore") or host in config.get("credHelpers", {}):
        return True
    return any(_registry_host(key) == host for key in config.get("auths", {}))


def _registry_host(auth_key: str) -> str:
    """docker's auths keys: https://index.docker.io/v1/ for Docker Hub, a host (maybe with scheme) elsewhere."""
    host = re.sub(r"^https?://", "", auth_key).split("/", 1)[0]
    return DOCKER_HUB if host in ("index.docker.io", "registry-1.docker.io", DOCKER_HUB) else host
