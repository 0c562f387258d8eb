"""Which manifest does the registry hold under a reference? A manifest HEAD over the Docker Registry HTTP API v2,
and the digest it answers with.

Anonymous bearer-token flow: the registry answers 401 with a `WWW-Authenticate: Bearer realm=...` challenge,
the realm hands out a pull token for `service` and `scope`, and the request is repeated with it. Docker Hub
answers 401 even with a token when a repository is private or does not exist: either way nobody can pull it
without credentials. HEAD requests do not count against Docker Hub's pull rate limit.

The digest is the registry's `Docker-Content-Digest` header. The spec lets a registry leave it out, so then
the manifest is fetched (GET) and hashed: a digest is the sha256 of the manifest's bytes as served.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import urlparse

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
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
SKIP_HINT = ("or deploy without asking the registry: build.skip=true (an image lorapod builds also needs "
             "image.tag=<a tag you pushed>)")


@dataclass(frozen=True)
class Manifest:
    status: int  # 200 found; 404 absent; 401/403 not readable anonymously (private, or absent on Docker Hub)
    digest: str | None = None  # sha256:<64 hex>, when found
    host: str = ""  # the registry API host that answered

    @property
    def found(self) -> bool:
        return self.status == 200


def api_base(ref: ImageRef, registry_url: str | None) -> str:
    if registry_url:
        return registry_url.rstrip("/")
    return DOCKER_HUB_API if ref.registry == DOCKER_HUB else f"https://{ref.registry}"


def lookup(ref: ImageRef, registry_url: str | None = None, timeout_s: float = 30.0) -> Manifest:
    """The registry's answer for `ref`: found with its digest, or the status that says why not. A registry
    that cannot be reached, or answers anything else, is a StageError saying so."""
    base = api_base(ref, registry_url)
    host = urlparse(base).netloc or base
    url = f"{base}/v2/{ref.name}/manifests/{ref.reference}"
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
            session = _Session(client, {"Accept": MANIFEST_TYPES})
            response = session.request("HEAD", url)
            digest = response.headers.get("Docker-Content-Digest") if response.status_code == 200 else None
            if response.status_code == 200 and not digest:
                response = session.request("GET", url)
                if response.status_code == 200:
                    digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
    except httpx.TransportError as exc:
        # DNS failure, connection refused, timeout: this machine cannot reach the registry at all.
        raise StageError(f"cannot reach {host} to look up {ref}: no network? ({type(exc).__name__}: {exc})",
                         f"check this machine's connection (or build.registry_url), {SKIP_HINT}") from exc
    except httpx.HTTPError as exc:
        raise StageError(f"the registry at {host} failed to answer for {ref} ({type(exc).__name__}: {exc})",
                         f"retry later, {SKIP_HINT}") from exc
    status = response.status_code
    if status == 200:
        if not DIGEST.fullmatch(digest or ""):
            raise StageError(f"the registry at {host} names {ref} by {digest!r}, not a sha256 digest",
                             f"check build.registry_url points at a registry, {SKIP_HINT}")
        if DIGEST.fullmatch(ref.reference) and digest != ref.reference:
            raise StageError(f"the registry at {host} answered for {ref} with another digest, {digest}",
                             f"check build.registry_url points at a registry you trust, {SKIP_HINT}")
        return Manifest(200, digest, host)
    if status in (401, 403, 404):
        if status != 404:
            logger.info(f"{ref.registry}/{ref.name} is not readable anonymously (HTTP {status}): private, "
                        "or not created yet")
        return Manifest(status, None, host)
    raise StageError(f"the registry at {host} answered HTTP {status} to {response.request.method} {url}",
                     f"retry later, {SKIP_HINT}")


class _Session:
    """Requests to one registry, answering its first bearer challenge with an anonymous token and keeping it."""

    def __init__(self, client: httpx.Client, headers: dict[str, str]):
        self.client, self.headers = client, dict(headers)

    def request(self, method: str, url: str) -> httpx.Response:
        response = self.client.request(method, url, headers=self.headers)
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status_code == 401 and challenge.lower().startswith("bearer ") \
                and "Authorization" not in self.headers:
            self.headers["Authorization"] = f"Bearer {_anonymous_token(self.client, challenge)}"
            response = self.client.request(method, url, headers=self.headers)
        return response


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
