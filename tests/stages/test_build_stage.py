"""stages/build.py: the registry check against a loopback registry that speaks the v2 token flow, and the
docker invocation through a fake `docker` on PATH (no Docker engine exists here)."""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

import pytest

from tests.loopback import serving
from hydra import compose, initialize_config_dir
from loguru import logger

import engine  # noqa: F401  (registers the config schemas)
from engine.context import PROJECT_ROOT, RunContext
from engine.errors import StageError
from engine.image import context_tag, resolved_image_ref
from engine.state import RunState
from stages.build import Build

TOKEN = "anonymous-pull-token"
TAG = context_tag(PROJECT_ROOT / "remote_image")
# A stand-in for the docker CLI, named as the fake it is: it records its arguments and prints buildkit-style
# progress; FAKE_DOCKER_EXIT makes the build fail the way a real one reports it.
FAKE_DOCKER = """#!/bin/sh
echo "$@" >> "$FAKE_DOCKER_CALLS"
if [ "$1 $2" = "buildx version" ]; then echo "github.com/docker/buildx v0.0.0-fake"; exit 0; fi
echo "#1 [internal] load build definition from Dockerfile"
echo "#1 DONE 0.0s"
echo "#5 [builder 3/3] RUN python3.12 -m venv /opt/venv"
echo "#5 0.512 Collecting torch==2.10.0"
if [ -n "$FAKE_DOCKER_EXIT" ]; then
    echo "#5 9.876 ERROR: No matching distribution found for torch==2.10.0"
    echo "ERROR: failed to solve: process did not complete successfully: exit code: 1"
    exit "$FAKE_DOCKER_EXIT"
fi
echo "#9 pushing layers 4.2s done"
echo "#9 DONE 12.0s"
"""


@dataclass
class FakeRegistry:
    existing: set[tuple[str, str]] = field(default_factory=set)
    status: int | None = None  # answer every manifest HEAD with this status
    token_queries: list[dict] = field(default_factory=list)
    heads: list[dict] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def registry():
    reg = FakeRegistry()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            url = urlparse(self.path)
            assert url.path == "/token", url.path
            reg.token_queries.append({k: v[0] for k, v in parse_qs(url.query).items()})
            self._send(200, json.dumps({"token": TOKEN}).encode())

        def do_HEAD(self):
            name, _, reference = self.path.removeprefix("/v2/").partition("/manifests/")
            reg.heads.append({"name": name, "reference": reference, "accept": self.headers.get("Accept", ""),
                              "authorization": self.headers.get("Authorization")})
            if reg.status is not None:
                self._send(reg.status)
            elif self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._send(401, headers={"WWW-Authenticate": f'Bearer realm="{reg.url}/token",'
                                                             f'service="fake-registry",scope="repository:{name}:pull"'})
            else:
                self._send(200 if (name, reference) in reg.existing else 404)

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


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    """PATH with only the fake docker on it, and a docker config logged in to Docker Hub."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "docker-calls.txt"
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": "eA=="}}}))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin:/bin")
    monkeypatch.setenv("FAKE_DOCKER_CALLS", str(calls))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.delenv("FAKE_DOCKER_EXIT", raising=False)
    return calls


@dataclass
class FakeProvider:
    """Only what the build stage asks of a provider: its name and whether it deploys images."""

    name: str = "runpod"
    uses_image: bool = True


@pytest.fixture
def logged():
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda m: lines.append((m.record["level"].name, m.record["message"])), level="DEBUG")
    yield lines
    logger.remove(sink)


def run_build(tmp_path, registry, *overrides, provider=None):
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"build.registry_url={registry.url}", *overrides])
    ctx = RunContext(cfg=cfg, run_dir=tmp_path, state=RunState(run_id="test"), provider=provider or FakeProvider())
    Build().run(ctx)
    return ctx


def test_an_image_the_registry_has_is_not_built(tmp_path, registry, fake_docker):
    registry.existing.add(("lorapod/trainer", TAG))
    ctx = run_build(tmp_path, registry)
    assert resolved_image_ref(ctx) == ctx.state.outputs["image_ref"] == f"docker.io/lorapod/trainer:{TAG}"
    assert not fake_docker.exists()
    assert registry.token_queries == [{"service": "fake-registry", "scope": "repository:lorapod/trainer:pull"}]
    first, second = registry.heads
    assert first["authorization"] is None and second["authorization"] == f"Bearer {TOKEN}"
    for media_type in ("application/vnd.oci.image.index.v1+json",
                       "application/vnd.docker.distribution.manifest.list.v2+json",
                       "application/vnd.docker.distribution.manifest.v2+json"):
        assert media_type in second["accept"]


def test_a_missing_image_is_built_and_pushed_with_progress_shown(tmp_path, registry, fake_docker, logged):
    ctx = run_build(tmp_path, registry)
    ref = f"docker.io/lorapod/trainer:{TAG}"
    assert ctx.state.outputs["image_ref"] == ref
    version, build = fake_docker.read_text().splitlines()
    assert version == "buildx version"
    context = PROJECT_ROOT / "remote_image"
    assert build == (f"buildx build --platform linux/amd64 --push --progress plain --tag {ref} "
                     f"--file {context / 'Dockerfile'} {context}")
    assert ("INFO", "#5 [builder 3/3] RUN python3.12 -m venv /opt/venv") in logged
    assert ("DEBUG", "#5 0.512 Collecting torch==2.10.0") in logged


def test_a_repository_hidden_from_anonymous_pulls_counts_as_missing(tmp_path, registry, fake_docker):
    registry.status = 401
    run_build(tmp_path, registry, "image.tag=v1")
    assert "--tag docker.io/lorapod/trainer:v1" in fake_docker.read_text()


def test_a_registry_error_is_reported_with_its_status(tmp_path, registry, fake_docker):
    registry.status = 503
    with pytest.raises(StageError, match="HTTP 503 to HEAD .*/v2/lorapod/trainer/manifests/") as err:
        run_build(tmp_path, registry)
    assert "build.skip=true" in err.value.hint
    assert not fake_docker.exists()


def test_a_failed_build_shows_the_last_lines_of_dockers_output(tmp_path, registry, fake_docker, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_EXIT", "17")
    with pytest.raises(StageError, match="exit 17") as err:
        run_build(tmp_path, registry)
    assert "No matching distribution found for torch==2.10.0" in str(err.value)
    assert "failed to solve" in str(err.value)


def test_no_docker_on_path_says_what_to_do(tmp_path, registry, fake_docker, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(StageError, match="no `docker` on PATH") as err:
        run_build(tmp_path, registry)
    assert "build.skip=true image.tag=" in err.value.hint


def test_docker_without_a_login_says_what_to_do(tmp_path, registry, fake_docker, monkeypatch):
    (tmp_path / "docker-config" / "config.json").write_text(json.dumps({"auths": {"ghcr.io": {}}}))
    with pytest.raises(StageError, match="not logged in to docker.io") as err:
        run_build(tmp_path, registry)
    assert "docker login docker.io" in err.value.hint
    assert fake_docker.read_text().splitlines() == ["buildx version"]


def test_build_skip_trusts_the_tag_and_asks_nobody(tmp_path, registry, fake_docker):
    ctx = run_build(tmp_path, registry, "build.skip=true", "image.tag=3f2a9c0d1e4b5a67")
    assert resolved_image_ref(ctx) == "docker.io/lorapod/trainer:3f2a9c0d1e4b5a67"
    assert registry.heads == [] and not fake_docker.exists()


@pytest.mark.parametrize("overrides, ref", [
    (["image=unsloth"], "docker.io/unsloth/unsloth:2026.10.9"),
    (["image.ref=ghcr.io/me/trainer:v2"], "ghcr.io/me/trainer:v2"),
])
def test_images_lorapod_does_not_build_are_deployed_as_named(tmp_path, registry, fake_docker, logged, overrides, ref):
    ctx = run_build(tmp_path, registry, *overrides)
    assert resolved_image_ref(ctx) == ref
    assert registry.heads == [] and not fake_docker.exists()
    assert any(message.startswith("nothing to build") for _, message in logged)


def test_a_provider_without_images_builds_nothing_and_says_why(tmp_path, registry, fake_docker, logged):
    ctx = run_build(tmp_path, registry, provider=FakeProvider(name="local", uses_image=False))
    assert "image_ref" not in ctx.state.outputs and registry.heads == []
    assert ("INFO", "nothing to build: provider=local runs on this machine's interpreter, not on an image") in logged
