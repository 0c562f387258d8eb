"""stages/build.py: every reference looked up in a loopback registry that speaks the v2 token flow
(tests/registry.py) before anything is rented, and the docker invocation through a fake `docker` on PATH (no
Docker engine exists here)."""
from __future__ import annotations

import json
import os
import socket
import stat
from dataclasses import dataclass

import pytest
from hydra import compose, initialize_config_dir
from loguru import logger

import engine  # noqa: F401  (registers the config schemas)
from engine.context import PROJECT_ROOT, RunContext
from engine.errors import ConfigError, StageError
from engine.image import context_tag, resolved_image_ref
from engine.state import RunState
from stages.build import Build
from tests.registry import TOKEN, loopback_registry

TAG = context_tag(PROJECT_ROOT / "remote_image")
REPOSITORY = "docker.io/tester/lorapod-trainer"
NAME = "tester/lorapod-trainer"
OURS = ("image=lorapod", f"image.repository={REPOSITORY}")
RUNPOD_TAG = "1.0.2-cu1281-torch280-ubuntu2404"
# A stand-in for the docker CLI, named as the fake it is: it records its arguments, prints buildkit-style
# progress, pushes a manifest to the registry at FAKE_REGISTRY_URL (a real push ends with that PUT), and writes
# the --metadata-file as buildx does: the pushed image's digest under "containerimage.digest"
# (docs.docker.com/reference/cli/docker/buildx/build/#metadata-file). FAKE_DOCKER_EXIT fails the build the way a
# real one reports it; FAKE_DOCKER_DIGEST writes another digest than the one pushed; FAKE_DOCKER_NO_DIGEST leaves
# the key out; FAKE_DOCKER_NO_PUSH reports success without pushing.
FAKE_DOCKER = """#!/bin/sh
echo "$@" >> "$FAKE_DOCKER_CALLS"
if [ "$1 $2" = "buildx version" ]; then echo "github.com/docker/buildx v0.0.0-fake"; exit 0; fi
while [ $# -gt 0 ]; do
    case "$1" in
        --metadata-file) metadata=$2; shift ;;
        --tag) ref=$2; shift ;;
    esac
    shift
done
echo "#1 [internal] load build definition from Dockerfile"
echo "#1 DONE 0.0s"
echo "#5 [builder 3/3] RUN python3.12 -m venv /opt/venv"
echo "#5 0.512 Collecting torch==2.10.0"
if [ -n "$FAKE_DOCKER_EXIT" ]; then
    echo "#5 9.876 ERROR: No matching distribution found for torch==2.10.0"
    echo "ERROR: failed to solve: process did not complete successfully: exit code: 1"
    exit "$FAKE_DOCKER_EXIT"
fi
path=${ref#*/}
manifest=$(mktemp)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"built":"%s"}}' \
    "$ref $(date +%s%N)" > "$manifest"
if [ -z "$FAKE_DOCKER_NO_PUSH" ]; then
    curl -fsS -X PUT -H "Content-Type: application/vnd.oci.image.manifest.v1+json" --data-binary "@$manifest" \
        "$FAKE_REGISTRY_URL/v2/${path%:*}/manifests/${path##*:}" || exit 1
fi
digest="sha256:$(sha256sum "$manifest" | cut -d' ' -f1)"
echo "#9 pushing layers 4.2s done"
echo "#9 DONE 12.0s"
if [ -n "$FAKE_DOCKER_NO_DIGEST" ]; then
    printf '{"image.name": "%s"}' "$ref" > "$metadata"
else
    printf '{"containerimage.digest": "%s", "image.name": "%s"}' "${FAKE_DOCKER_DIGEST:-$digest}" "$ref" > "$metadata"
fi
"""


@pytest.fixture
def registry():
    with loopback_registry() as reg:
        yield reg


@pytest.fixture
def fake_docker(tmp_path, monkeypatch, registry):
    """PATH with the fake docker first, and a docker config logged in to Docker Hub."""
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
    monkeypatch.setenv("FAKE_REGISTRY_URL", registry.url)
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    for knob in ("FAKE_DOCKER_EXIT", "FAKE_DOCKER_DIGEST", "FAKE_DOCKER_NO_DIGEST", "FAKE_DOCKER_NO_PUSH"):
        monkeypatch.delenv(knob, raising=False)
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


def run_build(tmp_path, registry_url, *overrides, provider=None):
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"build.registry_url={registry_url}", *overrides])
    ctx = RunContext(cfg=cfg, run_dir=tmp_path, state=RunState(run_id="test"), provider=provider or FakeProvider())
    Build().run(ctx)
    return ctx


# -- our own image -------------------------------------------------------------------------------------------

def test_an_image_the_registry_has_is_not_built_and_is_deployed_by_digest(tmp_path, registry, fake_docker):
    digest = registry.add(NAME, TAG)
    ctx = run_build(tmp_path, registry.url, *OURS)
    assert resolved_image_ref(ctx) == ctx.state.outputs["image_ref"] == f"{REPOSITORY}@{digest}"
    assert ctx.state.outputs["image"] == {"ref": f"{REPOSITORY}@{digest}", "repository": REPOSITORY, "tag": TAG,
                                          "digest": digest, "built": False, "checked": True}
    assert not fake_docker.exists()
    assert registry.token_queries == [{"service": "loopback-registry", "scope": f"repository:{NAME}:pull"}]
    first, second = registry.reads()
    assert (first["method"], first["reference"], first["authorization"]) == ("HEAD", TAG, None)
    assert second["authorization"] == f"Bearer {TOKEN}"
    for media_type in ("application/vnd.oci.image.index.v1+json",
                       "application/vnd.docker.distribution.manifest.list.v2+json",
                       "application/vnd.docker.distribution.manifest.v2+json"):
        assert media_type in second["accept"]


def test_without_a_digest_header_the_manifest_is_fetched_and_hashed(tmp_path, registry, fake_docker):
    registry.send_digest = False
    digest = registry.add(NAME, TAG)
    ctx = run_build(tmp_path, registry.url, *OURS)
    assert ctx.state.outputs["image_ref"] == f"{REPOSITORY}@{digest}"
    assert [r["method"] for r in registry.reads()] == ["HEAD", "HEAD", "GET"]


def test_a_missing_image_is_built_pushed_and_deployed_by_the_pushed_digest(tmp_path, registry, fake_docker, logged):
    ctx = run_build(tmp_path, registry.url, *OURS)
    ref = f"{REPOSITORY}:{TAG}"
    pushed = registry.digest(NAME, TAG)  # what the fake docker PUT, hashed by the registry
    assert ctx.state.outputs["image_ref"] == f"{REPOSITORY}@{pushed}"
    assert ctx.state.outputs["image"]["built"] is True and ctx.state.outputs["image"]["digest"] == pushed
    version, build = fake_docker.read_text().splitlines()
    assert version == "buildx version"
    context = PROJECT_ROOT / "remote_image"
    assert build == (f"buildx build --platform linux/amd64 --push --progress plain --metadata-file "
                     f"{tmp_path / 'build-metadata.json'} --tag {ref} --file {context / 'Dockerfile'} {context}")
    assert ("INFO", "#5 [builder 3/3] RUN python3.12 -m venv /opt/venv") in logged
    assert ("DEBUG", "#5 0.512 Collecting torch==2.10.0") in logged


def test_buildx_naming_no_digest_falls_back_to_the_registrys(tmp_path, registry, fake_docker, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_NO_DIGEST", "1")
    ctx = run_build(tmp_path, registry.url, *OURS)
    assert ctx.state.outputs["image_ref"] == f"{REPOSITORY}@{registry.digest(NAME, TAG)}"


def test_a_tag_moved_after_the_push_is_refused(tmp_path, registry, fake_docker, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_DIGEST", "sha256:" + "e" * 64)  # buildx pushed one thing, the tag holds another
    with pytest.raises(StageError, match="registry now holds sha256:[0-9a-f]{64} under that tag") as err:
        run_build(tmp_path, registry.url, *OURS)
    assert "sha256:" + "e" * 64 in str(err.value) and "only you push to image.repository" in err.value.hint


def test_a_push_that_left_no_digest_anywhere_is_refused(tmp_path, registry, fake_docker, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_NO_DIGEST", "1")
    monkeypatch.setenv("FAKE_DOCKER_NO_PUSH", "1")
    with pytest.raises(StageError, match="neither buildx's metadata .containerimage.digest. nor the registry "
                                         r"\(HTTP 404") as err:
        run_build(tmp_path, registry.url, *OURS)
    assert "imagetools inspect" in err.value.hint


def test_a_digest_that_is_not_sha256_is_refused(tmp_path, registry, fake_docker, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_DIGEST", "md5:1234")
    with pytest.raises(StageError, match="'md5:1234', not a sha256 digest"):
        run_build(tmp_path, registry.url, *OURS)


def test_a_repository_hidden_from_anonymous_pulls_is_built_and_deployed_by_buildxs_digest(
        tmp_path, registry, fake_docker):
    registry.status = 401
    ctx = run_build(tmp_path, registry.url, *OURS, "image.tag=v1")
    assert "--tag docker.io/tester/lorapod-trainer:v1" in fake_docker.read_text()
    metadata = json.loads((tmp_path / "build-metadata.json").read_text())
    assert ctx.state.outputs["image_ref"] == f"{REPOSITORY}@{metadata['containerimage.digest']}"


def test_a_registry_error_is_reported_with_its_status(tmp_path, registry, fake_docker):
    registry.status = 503
    with pytest.raises(StageError, match=f"HTTP 503 to HEAD .*/v2/{NAME}/manifests/") as err:
        run_build(tmp_path, registry.url, *OURS)
    assert "build.skip=true" in err.value.hint
    assert not fake_docker.exists()


def test_a_failed_build_shows_the_last_lines_of_dockers_output(tmp_path, registry, fake_docker, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_EXIT", "17")
    with pytest.raises(StageError, match="exit 17") as err:
        run_build(tmp_path, registry.url, *OURS)
    assert "No matching distribution found for torch==2.10.0" in str(err.value)
    assert "failed to solve" in str(err.value)


def test_no_docker_on_path_says_what_to_do(tmp_path, registry, fake_docker, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(StageError, match="no `docker` on PATH") as err:
        run_build(tmp_path, registry.url, *OURS)
    assert "build.skip=true image.tag=" in err.value.hint


def test_docker_without_a_login_says_what_to_do(tmp_path, registry, fake_docker, monkeypatch):
    (tmp_path / "docker-config" / "config.json").write_text(json.dumps({"auths": {"ghcr.io": {}}}))
    with pytest.raises(StageError, match="not logged in to docker.io") as err:
        run_build(tmp_path, registry.url, *OURS)
    assert "docker login docker.io" in err.value.hint
    assert fake_docker.read_text().splitlines() == ["buildx version"]


# -- every reference, checked before anything is rented ------------------------------------------------------

@pytest.mark.parametrize("overrides, name, reference", [
    ((), "runpod/pytorch", RUNPOD_TAG),
    (("image=unsloth",), "unsloth/unsloth", "studio"),
    (("image.ref=docker.io/me/trainer:v2",), "me/trainer", "v2"),
])
def test_images_lorapod_does_not_build_are_checked_and_deployed_by_that_digest(tmp_path, registry, fake_docker,
                                                                               logged, overrides, name, reference):
    digest = registry.add(name, reference)
    ctx = run_build(tmp_path, registry.url, *overrides)
    ref = ctx.state.outputs["image_ref"]
    assert ref.endswith(f"{name}@{digest}") and resolved_image_ref(ctx) == ref
    assert ctx.state.outputs["image"] == {"ref": ref, "tag": ref.replace(f"@{digest}", f":{reference}"),
                                          "digest": digest, "checked": True}
    assert [(r["method"], r["name"], r["reference"]) for r in registry.reads()] == [("HEAD", name, reference)] * 2
    assert not fake_docker.exists()
    assert any(message.startswith("nothing to build") for _, message in logged)


def test_an_image_ref_by_digest_is_checked_by_that_digest(tmp_path, registry, fake_docker):
    digest = registry.add("me/trainer", "v2")
    ctx = run_build(tmp_path, registry.url, f"image.ref=docker.io/me/trainer@{digest}")
    assert ctx.state.outputs["image_ref"] == f"docker.io/me/trainer@{digest}"
    assert registry.reads()[-1]["reference"] == digest


@pytest.mark.parametrize("status, says", [
    (404, "is not in its registry (127.0.0.1:"),
    (401, "cannot be read without credentials"),
    (403, "private or does not exist, and RunPod could not pull it either"),
])
@pytest.mark.parametrize("overrides, key, ref", [
    ((), "image.tag", f"docker.io/runpod/pytorch:{RUNPOD_TAG}"),
    (("image=unsloth",), "image.tag", "docker.io/unsloth/unsloth:studio"),
    (("image.ref=ghcr.io/me/gone:v1",), "image.ref", "ghcr.io/me/gone:v1"),
])
def test_a_missing_or_private_published_image_is_a_config_error(tmp_path, registry, fake_docker, status, says,
                                                                 overrides, key, ref):
    registry.status = None if status == 404 else status  # 404: the registry just has nothing under the name
    with pytest.raises(ConfigError) as err:
        run_build(tmp_path, registry.url, *overrides)
    assert err.value.exit_code == 2
    [problem] = err.value.problems
    assert problem.startswith(f"{key}: {ref} ") and says in problem, problem
    assert "image.ref=" in err.value.hint and "nothing was rented" in err.value.hint
    assert not fake_docker.exists()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # free once closed: nothing listens there


@pytest.mark.parametrize("url, host", [
    (None, "127.0.0.1:"),  # connection refused
    ("http://registry.invalid", "registry.invalid"),  # a name that never resolves (RFC 6761)
])
@pytest.mark.parametrize("overrides", [(), OURS])
def test_no_network_says_so_and_suggests_build_skip(tmp_path, fake_docker, url, host, overrides):
    url = url or f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(StageError, match=f"cannot reach {host}.*: no network\\?") as err:
        run_build(tmp_path, url, *overrides, "build.timeout_s=5")
    assert "build.skip=true" in err.value.hint
    assert not fake_docker.exists()


@pytest.mark.parametrize("overrides", [("build.skip=true",), ("image=unsloth", "build.skip=true"),
                                       (*OURS, "build.skip=true", "image.tag=3f2a9c0d1e4b5a67")])
def test_build_skip_trusts_the_reference_and_asks_nobody(tmp_path, registry, fake_docker, overrides):
    ctx = run_build(tmp_path, registry.url, *overrides)
    ref = resolved_image_ref(ctx)
    assert ref == ctx.state.outputs["image"]["ref"] and ctx.state.outputs["image"]["checked"] is False
    assert ref.split(":")[-1] in (RUNPOD_TAG, "studio", "3f2a9c0d1e4b5a67")
    assert registry.requests == [] and not fake_docker.exists()


def test_a_provider_without_images_asks_no_registry_and_says_why(tmp_path, registry, fake_docker, logged):
    ctx = run_build(tmp_path, registry.url, provider=FakeProvider(name="local", uses_image=False))
    assert "image_ref" not in ctx.state.outputs and registry.requests == []
    assert ("INFO", "nothing to build: provider=local runs on this machine's interpreter, not on an image") in logged
