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
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
REPOSITORY = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*")
DOCKER_HUB = "docker.io"


@dataclass(frozen=True)
class ImageRef:
    registry: str  # host[:port]; Docker Hub is docker.io
    name: str  # the repository path on that registry (Docker Hub's official images under library/)
    reference: str  # a tag or a sha256 digest

    def __str__(self) -> str:
        return f"{self.registry}/{self.name}{'@' if ':' in self.reference else ':'}{self.reference}"


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


def by_digest(ref: str, digest: str) -> str:
    """`ref` (repository:tag or repository@digest) as repository@digest, the repository spelled as given."""
    name = ref.partition("@")[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return f"{name[:colon] if colon > slash else name}@{digest}"


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
    """Problems with the `image` group, as (key, rule): an image lorapod builds needs a repository of the user's
    own and a Dockerfile, a published one a repository and tag; the pod settings must make sense."""
    image, problems = cfg.image, []
    if not image.ssh_key_env:
        problems.append(("image.ssh_key_env", "must name at least one variable: the image starts sshd with the "
                                              "public key it finds there (RunPod's and Unsloth's read PUBLIC_KEY)"))
    for name in image.ssh_key_env or []:
        if not ENV_NAME.fullmatch(str(name)):
            problems.append(("image.ssh_key_env", f"{name!r} is not an environment variable name (letters, digits "
                                                  "and '_', not starting with a digit)"))
    if image.ready_timeout_s is not None and image.ready_timeout_s <= 0:
        problems.append(("image.ready_timeout_s", f"must be > 0, or null for provider.ready_timeout_s "
                                                  f"(got {image.ready_timeout_s})"))
    if image.ref:
        try:
            parse_ref(image.ref)
        except ValueError as exc:
            problems.append(("image.ref", f"{exc}: write repository:tag or repository@sha256:..."))
        return problems
    context = context_dir(image)
    if image.repository is None:
        if context is not None:
            # No default namespace, ever: whoever owned it would receive every user's training data.
            problems.append(("image.repository", f"is required for image={image.name}, an image you build and "
                                                 f"push yourself: image.repository=docker.io/<you>/lorapod-trainer "
                                                 f"(a repository you can push to, after `docker login`); or drop "
                                                 f"image={image.name} to use RunPod's image, the default"))
        else:
            problems.append(("image.repository", "is required for a published image: the registry/name to "
                                                 "deploy, e.g. docker.io/runpod/pytorch"))
    elif not REPOSITORY.fullmatch(image.repository):
        problems.append(("image.repository", f"must be a lowercase registry/name such as docker.io/you/trainer "
                                             f"(got {image.repository!r})"))
    if image.tag is not None and not TAG.fullmatch(image.tag):
        problems.append(("image.tag", f"must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or "
                                      f"'-' (got {image.tag!r})"))
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
