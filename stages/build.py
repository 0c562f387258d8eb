"""build: make sure the image the pod runs exists before anything is rented, building and pushing an image
lorapod builds only when its registry lacks it.

Every reference is looked up in its registry (engine.registry): a published image (image=runpod, image=unsloth)
or an image.ref that is not there is a config error, found here for the price of one HEAD request rather than
by a pod that bills while it fails to pull. An image lorapod builds (image.context set) is tagged with the
content hash of its build context (engine.image), so the lookup usually finds it; otherwise it is built and
pushed with `docker buildx build --push`. Either way the pod is created by digest (repository@sha256:...), the
digest the registry (or buildx) answered with, so a tag moved by anybody later is never deployed.
build.skip=true asks no registry and deploys the reference as configured.

The reference settled on is state.outputs["image_ref"] (the provider reads it through
engine.image.resolved_image_ref()); state.outputs["image"] records tag and digest for run-summary.json.
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
from engine.errors import ConfigError, StageError
from engine.image import DOCKER_HUB, by_digest, context_dir, image_ref, parse_ref
from engine.stage import BaseStage

# buildkit's plain progress: "#5 [builder 2/4] RUN ...", "#5 DONE 12.3s" are steps; "#5 1.234 ..." is output.
_STEP_LINE = re.compile(r"#\d+ (?!\d+\.\d+ )")
TAIL_LINES = 25
# `docker buildx build --metadata-file` writes the pushed image's digest under this key
# (docs.docker.com/reference/cli/docker/buildx/build/#metadata-file).
METADATA_DIGEST = "containerimage.digest"
# For an image lorapod builds, skipping the build needs the tag too (engine.registry's hint covers every image).
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
        if build.skip:
            logger.info(f"build.skip=true: deploying {ref} without asking the registry")
            record = {"ref": ref, "digest": None, "checked": False}
        elif image.ref or context_dir(image) is None:
            record = check_published(ref, "image.ref" if image.ref else "image.tag", build)
        else:
            record = ensure_built(ref, ctx)
        ctx.state.outputs["image"] = record
        ctx.state.outputs["image_ref"] = record["ref"]


def check_published(ref: str, key: str, build) -> dict:
    """A reference lorapod does not build must exist in its registry, readable without credentials: RunPod
    pulls it anonymously too."""
    found = registry.lookup(parse_ref(ref), build.registry_url, build.timeout_s)
    if found.found:
        # By the digest just checked: what the pod pulls is what was found, even if the tag moves meanwhile
        # (image=unsloth's `studio` is rebuilt daily).
        deployed = by_digest(ref, found.digest)
        logger.info(f"nothing to build: {ref} is in its registry; deploying {deployed}")
        return {"ref": deployed, "tag": ref, "digest": found.digest, "checked": True}
    if found.status == 404:
        why = f"is not in its registry ({found.host} answered HTTP 404)"
    else:
        why = (f"cannot be read without credentials ({found.host} answered HTTP {found.status}, even with an "
               "anonymous token): it is private or does not exist, and RunPod could not pull it either")
    raise ConfigError([f"{key}: {ref} {why}"],
                      "name a reference that exists (image.tag=<tag>, or image.ref=<repository@sha256:...>), or "
                      "choose another image (image=runpod is the default); nothing was rented")


def ensure_built(ref: str, ctx: RunContext) -> dict:
    """The image lorapod builds, found or built under its tag, and the digest to deploy it by."""
    image, build = ctx.cfg.image, ctx.cfg.build
    tagged = parse_ref(ref)
    found = registry.lookup(tagged, build.registry_url, build.timeout_s)
    if found.found:
        logger.info(f"{ref} is in the registry ({found.digest}): nothing to build")
        digest, built = found.digest, False
    else:
        logger.info(f"{ref} is not in the registry: building it for {build.platform} and pushing it")
        pushed = docker_build(ref, context_dir(image), build.platform, ctx.run_dir / "build-metadata.json")
        logger.info(f"pushed {ref}")
        digest, built = settle_digest(ref, pushed, registry.lookup(tagged, build.registry_url, build.timeout_s)), True
    deployed = f"{image.repository}@{digest}"
    logger.info(f"deploying {deployed}: by digest, so a tag moved later changes nothing")
    return {"ref": deployed, "repository": image.repository, "tag": tagged.reference, "digest": digest,
            "built": built, "checked": True}


def settle_digest(ref: str, pushed: str | None, after: registry.Manifest) -> str:
    """The digest of what was just pushed: buildx's, checked against what the registry now holds under the tag
    (a repository private to anonymous readers cannot be checked); the registry's when buildx named none."""
    if pushed and after.found and after.digest != pushed:
        raise StageError(f"buildx pushed {ref} as {pushed}, but the registry now holds {after.digest} under that "
                         "tag: something else pushed to it in between",
                         "make sure only you push to image.repository, then run again")
    digest = pushed or after.digest
    if not digest:
        raise StageError(f"pushed {ref}, but neither buildx's metadata ({METADATA_DIGEST}) nor the registry "
                         f"(HTTP {after.status} from {after.host}) names its digest, so it cannot be deployed "
                         "by digest",
                         "check that the push really reached the registry (`docker buildx imagetools inspect "
                         f"{ref}`), then run again")
    if pushed and not after.found:
        logger.info(f"the registry does not show {ref} to anonymous readers (HTTP {after.status}): deploying "
                    "buildx's digest unchecked")
    return digest


def docker_build(ref: str, context: Path, platform: str, metadata_file: Path) -> str | None:
    """Build and push; the pushed image's digest from buildx's metadata file, or None when it names none."""
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
    metadata_file.unlink(missing_ok=True)  # a file left by an earlier attempt must not name this push's digest
    command = [docker, "buildx", "build", "--platform", platform, "--push", "--progress", "plain",
               "--metadata-file", str(metadata_file), "--tag", ref, "--file", str(context / "Dockerfile"),
               str(context)]
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
    return pushed_digest(metadata_file)


def pushed_digest(metadata_file: Path) -> str | None:
    try:
        metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning(f"buildx wrote no readable metadata file ({exc}): asking the registry for the digest")
        return None
    digest = metadata.get(METADATA_DIGEST) if isinstance(metadata, dict) else None
    if digest is None:
        logger.warning(f"buildx's metadata names no {METADATA_DIGEST}: asking the registry for the digest")
        return None
    if not registry.DIGEST.fullmatch(str(digest)):
        raise StageError(f"buildx's metadata gives {METADATA_DIGEST} as {digest!r}, not a sha256 digest",
                         f"look at {metadata_file}; update Docker's buildx plugin if it is old")
    return digest


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
