"""The pod's image: which reference is deployed, the content tag of an image lorapod builds, and the checks
on the `image` config group.

An image lorapod builds (image.context set) is tagged with a hash of what docker would send as its build
context: the folder's files minus .dockerignore's. The same files give the same tag on every machine, so
the build stage finds an image someone already pushed, and editing a file the image does not contain (the
training script, uploaded with every run) does not force a rebuild.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from engine.context import PROJECT_ROOT, RunContext
from engine.hashing import sha256_file

TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
REPOSITORY = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*")
DOCKER_HUB = "docker.io"


@dataclass(frozen=True)
class ImageRef:
    registry: str  # host[:port]; Docker Hub is docker.io
    name: str  # the repository path on that registry (Docker Hub's official images under library/)
    reference: str  # a tag or a sha256 digest


def context_dir(image: DictConfig) -> Path | None:
    if not image.context:
        return None
    path = Path(os.path.expanduser(image.context))
    return path if path.is_absolute() else PROJECT_ROOT / path


def image_ref(image: DictConfig) -> str:
    """The reference to deploy: image.ref as given, else repository:tag, the tag defaulting to the content tag."""
    if image.ref:
        return image.ref
    return f"{image.repository}:{image.tag or context_tag(context_dir(image))}"


def parse_ref(ref: str) -> ImageRef:
    name, _, digest = ref.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = name[colon + 1:] if colon > slash else None
    name = name[:colon] if tag is not None else name
    if not (digest or tag):
        raise ValueError(f"{ref!r} names no tag or digest")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return ImageRef(registry, path, digest or tag)


def _ignore_patterns(context: Path) -> list[str]:
    ignore_file = context / ".dockerignore"
    if not ignore_file.is_file():
        return []
    patterns = []
    for raw in ignore_file.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!"):
            raise ValueError(f"{ignore_file}: exceptions ({line}) are not supported by lorapod's image tag")
        patterns.append(line.strip("/"))
    return patterns


def _ignored(rel: str, patterns: list[str]) -> bool:
    """A file is ignored when it, or a folder above it, matches a pattern; `**/x` matches x at any depth."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        anywhere = pattern[3:] if pattern.startswith("**/") else None
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, pattern):
                return True
            if anywhere and (fnmatch.fnmatchcase(candidate, anywhere)
                             or fnmatch.fnmatchcase(candidate, f"*/{anywhere}")):
                return True
    return False


def context_tag(context: Path) -> str:
    """16 hex digits of sha256 over each included file's path, executable bit and content."""
    patterns = _ignore_patterns(context)
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        rel = path.relative_to(context).as_posix()
        if _ignored(rel, patterns):
            continue
        mode = "x" if os.access(path, os.X_OK) else "-"
        digest.update(f"{rel}\0{mode}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()[:16]


def check_config(cfg: DictConfig) -> list[tuple[str, str]]:
    """Problems with the `image` group, as (key, rule): a published image needs a tag, a built one a Dockerfile."""
    image, problems = cfg.image, []
    if image.ref:
        try:
            parse_ref(image.ref)
        except ValueError as exc:
            problems.append(("image.ref", f"{exc}: write repository:tag or repository@sha256:..."))
        return problems
    if not REPOSITORY.fullmatch(image.repository):
        problems.append(("image.repository", f"must be a lowercase registry/name such as docker.io/you/trainer "
                                             f"(got {image.repository!r})"))
    if image.tag is not None and not TAG.fullmatch(image.tag):
        problems.append(("image.tag", f"must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or "
                                      f"'-' (got {image.tag!r})"))
    context = context_dir(image)
    if context is None and image.tag is None:
        problems.append(("image.tag", "is required for a published image (image.context is null, so there is "
                                      "nothing to hash): name the tag to deploy"))
    if context is not None and not (context / "Dockerfile").is_file():
        problems.append(("image.context", f"must be a folder with a Dockerfile ({context} has none)"))
    return problems


def resolved_image_ref(ctx: RunContext) -> str:
    """The image a pod must run: what the build stage settled on (state.outputs["image_ref"]), else what the
    config names. Here, not in the build stage, because providers need it and the engine imports no stage."""
    return ctx.state.outputs.get("image_ref") or image_ref(ctx.cfg.image)
