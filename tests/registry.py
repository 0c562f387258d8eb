"""A loopback container registry that speaks what lorapod uses of the Docker Registry HTTP API v2: the anonymous
bearer-token flow, manifest HEAD and GET answered with `Docker-Content-Digest`, and manifest PUT (what a push
ends with) so a fake `docker buildx build --push` can really push. A real HTTP server on 127.0.0.1; build.registry_url
points lorapod at it.

Digests are the registry's own: the sha256 of a manifest's bytes, as distribution/distribution computes them.
Pushing needs no credentials here: docker's login is docker's business, not lorapod's.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from tests.loopback import serving

TOKEN = "anonymous-pull-token"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def manifest_body(label: str) -> bytes:
    """An image manifest as a registry stores it; `label` keeps two images' bytes (and digests) apart."""
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": "sha256:" + hashlib.sha256(label.encode()).hexdigest(), "size": 2},
                       "layers": []}, separators=(",", ":")).encode()


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass
class LoopbackRegistry:
    manifests: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (name, tag or digest) -> bytes
    status: int | None = None  # answer every manifest request with this status
    send_digest: bool = True  # False: leave Docker-Content-Digest out (the spec allows it), so clients GET and hash
    token_queries: list[dict] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)  # every manifest request: method, name, reference, headers
    url: str = ""

    def add(self, name: str, tag: str, label: str | None = None) -> str:
        """Store an image under `name:tag` (and its digest); returns the digest."""
        body = manifest_body(label or f"{name}:{tag}")
        digest = digest_of(body)
        self.manifests[(name, tag)] = self.manifests[(name, digest)] = body
        return digest

    def digest(self, name: str, tag: str) -> str:
        return digest_of(self.manifests[(name, tag)])

    def reads(self) -> list[dict]:
        return [r for r in self.requests if r["method"] in ("HEAD", "GET")]


@contextlib.contextmanager
def loopback_registry():
    reg = LoopbackRegistry()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            url = urlparse(self.path)
            if url.path == "/token":
                reg.token_queries.append({k: v[0] for k, v in parse_qs(url.query).items()})
                self._send(200, json.dumps({"token": TOKEN}).encode())
            else:
                self._manifest()

        def do_HEAD(self):
            self._manifest()

        def do_PUT(self):
            name, reference = self._parse()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            reg.requests.append({"method": "PUT", "name": name, "reference": reference})
            digest = digest_of(body)
            reg.manifests[(name, reference)] = reg.manifests[(name, digest)] = body
            self._send(201, headers={"Docker-Content-Digest": digest})

        def _parse(self) -> tuple[str, str]:
            name, _, reference = urlparse(self.path).path.removeprefix("/v2/").partition("/manifests/")
            return name, reference

        def _manifest(self):
            name, reference = self._parse()
            reg.requests.append({"method": self.command, "name": name, "reference": reference,
                                 "accept": self.headers.get("Accept", ""),
                                 "authorization": self.headers.get("Authorization")})
            if reg.status is not None:
                return self._send(reg.status)
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._send(401, headers={"WWW-Authenticate": f'Bearer realm="{reg.url}/token",'
                                                f'service="loopback-registry",scope="repository:{name}:pull"'})
            body = reg.manifests.get((name, reference))
            if body is None:
                return self._send(404)
            headers = {"Content-Type": OCI_MANIFEST}
            if reg.send_digest:
                headers["Docker-Content-Digest"] = digest_of(body)
            self._send(200, body, headers)

        def _send(self, status, body=b"", headers=None):
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    with serving(Handler) as url:
        reg.url = url
        yield reg
