"""Does the registry have this image? One manifest HEAD over the Docker Registry HTTP API v2.

Anonymous bearer-token flow: the registry answers 401 with a `WWW-Authenticate: Bearer realm=...` challenge,
the realm hands out a pull token for `service` and `scope`, and the HEAD is repeated with it. Docker Hub
answers 401 even with a token when a repository is private or does not exist yet; both mean "build it".
HEAD requests do not count against Docker Hub's pull rate limit.
"""
from __future__ import annotations

import re

import httpx
from loguru import logger

from engine.errors import StageError
from engine.image import DOCKER_HUB, ImageRef

DOCKER_HUB_API = "https://registry-1.docker.io"
MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
SKIP_HINT = "or deploy a tag you know exists without asking the registry: build.skip=true image.tag=<tag>"


def api_base(ref: ImageRef, registry_url: str | None) -> str:
    if registry_url:
        return registry_url.rstrip("/")
    return DOCKER_HUB_API if ref.registry == DOCKER_HUB else f"https://{ref.registry}"


def manifest_exists(ref: ImageRef, registry_url: str | None = None, timeout_s: float = 30.0) -> bool:
    base = api_base(ref, registry_url)
    url = f"{base}/v2/{ref.name}/manifests/{ref.reference}"
    headers = {"Accept": MANIFEST_TYPES}
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
            response = client.head(url, headers=headers)
            challenge = response.headers.get("WWW-Authenticate", "")
            if response.status_code == 401 and challenge.lower().startswith("bearer "):
                token = _anonymous_token(client, challenge)
                response = client.head(url, headers={**headers, "Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise StageError(f"cannot reach the registry at {base} ({type(exc).__name__}: {exc})",
                         f"check the network or build.registry_url, {SKIP_HINT}") from exc
    status = response.status_code
    if status == 200:
        return True
    if status == 404:
        return False
    if status in (401, 403):
        logger.info(f"{ref.registry}/{ref.name} is not readable anonymously (private, or not created yet): "
                    "treating the tag as missing")
        return False
    raise StageError(f"the registry answered HTTP {status} to HEAD {url}", f"retry later, {SKIP_HINT}")


def _anonymous_token(client: httpx.Client, challenge: str) -> str:
    params = dict(_CHALLENGE_PARAM.findall(challenge))
    realm = params.pop("realm", None)
    if not realm:
        raise StageError(f"the registry's challenge names no token realm: {challenge!r}", SKIP_HINT)
    response = client.get(realm, params=params)
    if response.status_code != 200:
        raise StageError(f"the registry's token service answered HTTP {response.status_code} at {realm}",
                         f"retry later, {SKIP_HINT}")
    try:
        body = response.json()
    except ValueError:
        body = None
    token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
    if not token:
        raise StageError(f"the registry's token service at {realm} returned no token", SKIP_HINT)
    return token
