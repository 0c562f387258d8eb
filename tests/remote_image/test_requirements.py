"""remote_image/requirements.txt: every package pinned once, and the same versions as the CPU environment."""
from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from tests.remote_image.podside import REMOTE_IMAGE

PYPROJECT = REMOTE_IMAGE.parent / "pyproject.toml"
# The packages whose versions decide what training does; torch differs on purpose (CPU build here).
SAME_EVERYWHERE = ("transformers", "trl", "peft", "datasets", "accelerate", "unsloth", "unsloth-zoo")


def pins(path) -> dict[str, str]:
    """name -> version of a requirements file, failing on anything but one `name==version` per package."""
    found: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path.name}:{lineno}: {raw.strip()!r}"
        assert not line.startswith("-"), f"{where}: pip options belong in the Dockerfile's pip command"
        req = Requirement(line)
        specs = list(req.specifier)
        assert req.url is None and len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version, \
            f"{where} is not pinned: write name==version"
        name = canonicalize_name(req.name)
        assert name not in found, f"{where}: {req.name} is listed twice"
        found[name] = specs[0].version
    return found


def pyproject_requirements() -> list[Requirement]:
    data = tomllib.loads(PYPROJECT.read_text())
    listed = data["project"]["optional-dependencies"]["train"] + data["tool"]["lorapod"]["train-no-deps"]
    return [Requirement(r) for r in listed]


@pytest.fixture(scope="module")
def locked() -> dict[str, str]:
    return pins(REMOTE_IMAGE / "requirements.txt")


def test_the_chosen_pins_are_in_the_lock_unchanged(locked):
    chosen = pins(REMOTE_IMAGE / "requirements.in")
    assert {name: locked.get(name) for name in chosen} == chosen


def test_the_pin_checker_catches_unpinned_and_duplicate_requirements(tmp_path):
    for text, message in [("torch>=2.7\n", "is not pinned"), ("peft\n", "is not pinned"),
                          ("trl==1.*\n", "is not pinned"), ("peft==0.21.2\nPEFT==0.21.2\n", "listed twice"),
                          ("--extra-index-url https://example.invalid\n", "pip options")]:
        bad = tmp_path / "requirements.txt"
        bad.write_text(text)
        with pytest.raises(AssertionError, match=message):
            pins(bad)


def test_training_packages_are_the_same_versions_as_pyproject(locked):
    declared = {canonicalize_name(r.name): r for r in pyproject_requirements()}
    for name in SAME_EVERYWHERE:
        assert name in declared, f"pyproject.toml pins no {name}: add {name}=={locked[name]}"
        specs = list(declared[name].specifier)
        assert [(s.operator, s.version) for s in specs] == [("==", locked[name])], \
            f"pyproject.toml has {declared[name]}, remote_image/requirements.txt has {name}=={locked[name]}"
    for name, req in declared.items():  # ranges (torch, tokenizers, ...) must admit the pod's version
        if name in locked:
            assert req.specifier.contains(locked[name], prereleases=True), \
                f"pyproject.toml's {req} excludes the pod's {name}=={locked[name]}"


def test_the_installed_training_packages_are_the_pods(locked):
    """What CI trains with is what the pod trains with; packages not installed here are skipped."""
    drift = []
    for name in SAME_EVERYWHERE:
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue
        if Version(installed) != Version(locked[name]):
            drift.append(f"{name} {installed} installed, the pod has {locked[name]}")
    assert not drift, "; ".join(drift) + ": pip install -e '.[train]' (unsloth: see [tool.lorapod])"


def test_torch_is_the_cuda_12_8_build_with_a_prebuilt_xformers(locked):
    cuda_runtime = locked["nvidia-cuda-runtime-cu12"]
    assert cuda_runtime.startswith("12.8."), f"torch's CUDA runtime is {cuda_runtime}: the image is CUDA 12.8"
    assert not any(re.fullmatch(r"nvidia-.*-cu13", name) for name in locked), "a CUDA 13 wheel slipped in"
    assert Version(locked["xformers"]) >= Version("0.0.33"), "xformers < 0.0.33 has no working Blackwell kernels"
    assert Version(locked["bitsandbytes"]) not in (Version("0.46.0"), Version("0.48.0")), "Unsloth excludes it"


def test_torchao_is_the_release_built_for_the_pinned_torch(locked):
    """torchao loads its C++ ops only for the torch it was built against, else it warns and runs without them.
    Its own table (torchao/__init__.py, "Built against torch X") in the pod's closure is the source checked here."""
    import subprocess

    from tests.closure_seed import pod_venv

    python = pod_venv() / "bin" / "python"
    origin = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('torchao').origin)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    text = open(origin).read()
    built = dict(re.findall(r'\(_parse_version\("([\d.]+)"\), _parse_version\("(\d+\.\d+\.\d+)"\)\)', text))
    torch = locked["torch"].split("+", 1)[0]
    assert built.get(locked["torchao"]) == torch, \
        f"torchao=={locked['torchao']} is built for torch {built.get(locked['torchao'])}, the pod has torch {torch}"
    assert version_of(python, "torchao") == locked["torchao"], "the pod's closure is not remote_image/requirements.txt"


def version_of(python, name: str) -> str:
    import subprocess

    return subprocess.run([str(python), "-c", f"from importlib.metadata import version; print(version({name!r}))"],
                          capture_output=True, text=True, check=True).stdout.strip()
