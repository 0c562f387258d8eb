"""engine/image.py: references, the content tag of remote_image/, and the checks on the `image` group."""
from __future__ import annotations

import os
import re
import shutil

import pytest
from hydra import compose, initialize_config_dir

import engine  # noqa: F401  (registers the config schemas)
from engine.context import PROJECT_ROOT
from engine.errors import ConfigError
from engine.image import ImageRef, check_config, context_tag, image_ref, parse_ref
from engine.validate import validate


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("ref, parsed", [
    ("docker.io/lorapod/trainer:abc", ImageRef("docker.io", "lorapod/trainer", "abc")),
    ("lorapod/trainer:abc", ImageRef("docker.io", "lorapod/trainer", "abc")),
    ("ubuntu:24.04", ImageRef("docker.io", "library/ubuntu", "24.04")),
    ("ghcr.io/me/img:v1", ImageRef("ghcr.io", "me/img", "v1")),
    ("localhost:5000/img:dev", ImageRef("localhost:5000", "img", "dev")),
    ("ghcr.io/me/img:v1@sha256:" + "a" * 64, ImageRef("ghcr.io", "me/img", "sha256:" + "a" * 64)),
])
def test_parse_ref(ref, parsed):
    assert parse_ref(ref) == parsed


def test_a_ref_without_tag_or_digest_is_refused():
    with pytest.raises(ValueError, match="no tag or digest"):
        parse_ref("localhost:5000/img")


@pytest.fixture
def context(tmp_path):
    folder = tmp_path / "ctx"
    shutil.copytree(PROJECT_ROOT / "remote_image", folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def test_the_tag_ignores_what_docker_never_sees(context):
    before = context_tag(context)
    (context / "train_unsloth.py").write_text("# edited: uploaded with every run, not in the image\n")
    (context / "requirements.in").write_text("# edited\n")
    (context / "__pycache__").mkdir()
    (context / "__pycache__" / "watchdog.cpython-311.pyc").write_bytes(b"\0")
    assert context_tag(context) == before


def test_the_tag_follows_what_the_image_is_built_from(context):
    before = context_tag(context)
    assert re.fullmatch(r"[0-9a-f]{16}", before)
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "# a change\n")
    changed = context_tag(context)
    assert changed != before
    os.chmod(context / "start.sh", 0o644)
    assert context_tag(context) != changed


def test_dockerignore_exceptions_are_refused_rather_than_misread(context):
    (context / ".dockerignore").write_text("*.py\n!watchdog.py\n")
    with pytest.raises(ValueError, match="not supported"):
        context_tag(context)


def test_the_default_image_is_runpods_pinned_pytorch_image():
    cfg = compose_cfg()
    assert cfg.image.name == "runpod" and cfg.image.context is None and cfg.image.python is None
    assert image_ref(cfg.image) == "docker.io/runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404"
    assert (PROJECT_ROOT / cfg.image.requirements).is_file()
    assert check_config(cfg) == []


def test_the_lorapod_image_is_remote_image_at_its_content_tag_in_your_repository():
    ours = ("image=lorapod", "image.repository=docker.io/you/lorapod-trainer")
    cfg = compose_cfg(*ours)
    assert image_ref(cfg.image) == f"docker.io/you/lorapod-trainer:{context_tag(PROJECT_ROOT / 'remote_image')}"
    assert image_ref(compose_cfg(*ours, "image.tag=v7").image) == "docker.io/you/lorapod-trainer:v7"
    pinned = "ghcr.io/me/t@sha256:" + "b" * 64
    assert image_ref(compose_cfg(f"image.ref={pinned}").image) == pinned


def test_the_lorapod_image_has_no_default_repository():
    cfg = compose_cfg("image=lorapod")
    assert cfg.image.repository is None
    [(key, rule)] = check_config(cfg)
    assert key == "image.repository"
    assert "image.repository=docker.io/<you>/lorapod-trainer" in rule and "drop image=lorapod" in rule


def test_the_lorapod_images_interpreter_is_the_dockerfiles_venv():
    dockerfile = (PROJECT_ROOT / "remote_image" / "Dockerfile").read_text()
    venv = compose_cfg("image=lorapod").image.python.removesuffix("/bin/python")
    assert f"-m venv {venv} " in dockerfile and f"COPY --from=builder {venv} {venv}" in dockerfile


def test_unsloths_image_is_a_published_tag_with_its_own_key_names_and_pull_time():
    cfg = compose_cfg("image=unsloth")
    assert image_ref(cfg.image) == f"docker.io/unsloth/unsloth:{cfg.image.tag}"
    # A tag of a scheme Unsloth publishes for the full image (sshd included; `core` has none), not a made-up one.
    assert cfg.image.tag in ("latest", "studio") or re.fullmatch(r"nightly-\d{4}\.\d{2}\.\d{2}|v[\d.]+(-beta)?",
                                                                 cfg.image.tag)
    assert cfg.image.python == "/opt/unsloth-venv/bin/python"
    assert list(cfg.image.ssh_key_env) == ["SSH_KEY", "PUBLIC_KEY", "SSH_PUBLIC_KEY"]
    assert cfg.image.ready_timeout_s > compose_cfg("gpu=rtx5090").provider.ready_timeout_s
    assert check_config(cfg) == []
    assert "Unsloth's stack, not ours" in (PROJECT_ROOT / "conf" / "image" / "unsloth.yaml").read_text()


@pytest.mark.parametrize("overrides, key", [
    (["image=unsloth", "image.tag=null"], "image.tag"),
    (["image.tag=null"], "image.tag"),
    (["image.repository=Docker.io/Me/Trainer"], "image.repository"),
    (["image.repository=null"], "image.repository"),
    (["image=lorapod"], "image.repository"),
    (["image.tag=-bad"], "image.tag"),
    (["image=lorapod", "image.repository=docker.io/you/t", "image.context=examples"], "image.context"),
    (["image.ref=ghcr.io/me/trainer"], "image.ref"),
    (["image=lorapod", "image.repository=docker.io/you/t", "build.skip=true"], "build.skip"),
    (["image.ssh_key_env=[]"], "image.ssh_key_env"),
    (["image.ssh_key_env=[PUBLIC_KEY,1KEY]"], "image.ssh_key_env"),
    (["image.ssh_key_env=[PUBLIC-KEY]"], "image.ssh_key_env"),
    (["image.ready_timeout_s=0"], "image.ready_timeout_s"),
    (["image=unsloth", "image.ready_timeout_s=-5"], "image.ready_timeout_s"),
])
def test_image_problems_are_reported_before_anything_runs(overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(*overrides))
    assert [p for p in err.value.problems if p.startswith(f"{key}:")], err.value.problems


@pytest.mark.parametrize("overrides", [
    ["image=lorapod", "image.repository=docker.io/you/t", "build.skip=true", "image.tag=3f2a9c0d1e4b5a67"],
    ["build.skip=true"],  # a published image names its tag already
    ["image=unsloth", "build.skip=true"],
])
def test_build_skip_needs_an_explicit_tag_only_for_an_image_lorapod_builds(overrides):
    validate(compose_cfg(*overrides))
