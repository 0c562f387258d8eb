"""How big is the pod image, from remote_image/Dockerfile and requirements.txt alone (nothing is built or
pulled): every layer of the final stage with its source, every pinned wheel with its download size from
PyPI's JSON metadata, the total, and the same figures for the original trainer's image (runpod/pytorch, a
CUDA devel base with PyTorch, plus xformers built from source).

    python bench/bench_image_size.py

Sizes are downloads (compressed), which is what a pod pulls. Only PyPI is asked; what it cannot tell (the
CUDA base image and apt packages, from registries this bench does not reach) is listed as not measured and
left out of both totals, so the comparison covers what differs and is measured the same way on both sides.
"""
from __future__ import annotations

import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "remote_image"
PYPI = "https://pypi.org/pypi"
# The image's interpreter and platform: CPython 3.12 on Ubuntu 24.04 (glibc 2.39), x86_64.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
SUPPORTED = [str(t) for t in [*cpython_tags((3, 12), platforms=PLATFORMS),
                              *compatible_tags((3, 12), "cp312", PLATFORMS)]]
# What a CUDA devel base adds on top of the CUDA libraries that torch's wheels already bring: a second,
# system-wide copy of those libraries (counted at the sizes of the same wheels) and the compiler that the
# source build of xformers needs. cuDNN (only in *-cudnn-* bases), headers and static libraries are not
# counted: the figure is a lower bound.
SYSTEM_CUDA_COPY = ("nvidia-cublas-cu12", "nvidia-cufft-cu12", "nvidia-curand-cu12",
                    "nvidia-cusolver-cu12", "nvidia-cusparse-cu12", "nvidia-cuda-nvrtc-cu12",
                    "nvidia-nvjitlink-cu12", "nvidia-cuda-runtime-cu12", "nvidia-cuda-cupti-cu12",
                    "nvidia-nccl-cu12", "nvidia-nvtx-cu12")
NVCC = ("nvidia-cuda-nvcc-cu12", "12.8.93")
MB = 1e6


def pins(path: Path) -> list[tuple[str, str]]:
    found = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            found.append((canonicalize_name(name), version))
    return found


def release_files(client: httpx.Client, name: str, version: str) -> list[dict]:
    """The files of one release: the per-release JSON, else (mirrors that lack it answer 404) the project's."""
    response = client.get(f"{PYPI}/{name}/{version}/json")
    if response.status_code == 404:
        response = client.get(f"{PYPI}/{name}/json")
        response.raise_for_status()
        return response.json()["releases"].get(version, [])
    response.raise_for_status()
    return response.json()["urls"]


def wheel_for_image(files: list[dict]) -> dict | None:
    """The wheel pip would pick on the image: the most specific tag the image's interpreter supports."""
    ranked = []
    for f in files:
        if not f["filename"].endswith(".whl"):
            continue
        tags = {str(t) for t in parse_wheel_filename(f["filename"])[3]}
        best = min((SUPPORTED.index(t) for t in tags if t in SUPPORTED), default=None)
        if best is not None:
            ranked.append((best, f["filename"], f))
    return min(ranked)[2] if ranked else None


def wheel_sizes(requirements: list[tuple[str, str]]) -> list[tuple[str, str, str, int | None]]:
    with httpx.Client(timeout=60, follow_redirects=True) as client, ThreadPoolExecutor(8) as pool:
        def one(pin):
            name, version = pin
            wheel = wheel_for_image(release_files(client, name, version))
            return name, version, wheel["filename"] if wheel else "no wheel for the image!", \
                wheel["size"] if wheel else None
        return list(pool.map(one, requirements))


def final_stage_layers(wheels_total: int) -> list[tuple[str, str, str]]:
    text = (IMAGE / "Dockerfile").read_text()
    base = re.search(r"^ARG CUDA_IMAGE=(\S+)", text, re.M).group(1)
    final = re.split(r"^FROM ", text, flags=re.M)[-1]
    rows = [(f"FROM {base}", "Docker Hub (nvidia/cuda)", "not measured")]
    for instruction in re.findall(r"^(RUN|COPY|ADD)\b((?:[^\n]*\\\n)*[^\n]*)", final, re.M):
        body = " ".join(instruction[1].replace("\\\n", " ").split())
        if instruction[0] == "RUN" and "apt-get install" in body:
            packages = body.split("--no-install-recommends", 1)[1].split("&&", 1)[0].strip()
            rows.append((f"RUN apt-get install {packages}", "Ubuntu 24.04 archive", "not measured"))
        elif "--from=builder /opt/venv" in body:
            rows.append(("COPY --from=builder /opt/venv", "the pinned wheels below", f"{wheels_total / MB:,.0f} MB"))
        elif instruction[0] == "COPY":
            files = [f for f in body.split() if not f.startswith("--")][:-1]
            size = sum((IMAGE / f).stat().st_size for f in files)
            rows.append((f"COPY {' '.join(files)}", "remote_image/", f"{size / MB:.2f} MB"))
        else:
            rows.append((f"{instruction[0]} {body[:60]}", "", "~0"))
    rows.append(("ENV, WORKDIR, EXPOSE, CMD", "metadata", "0"))
    return rows


def table(rows: list[tuple], header: tuple) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i < len(r) - 1 else str(c).rjust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])


def main() -> int:
    requirements = pins(IMAGE / "requirements.txt")
    sizes = wheel_sizes(requirements + [NVCC])
    nvcc = sizes.pop()
    missing = [f"{n}=={v}" for n, v, _, s in sizes if s is None]
    by_name = {n: s or 0 for n, _, _, s in sizes}
    ours = sum(by_name.values())

    print("Layers of remote_image/Dockerfile's final stage (downloads)\n")
    print(table(final_stage_layers(ours), ("layer", "source", "size")))
    print(f"\nPinned wheels for CPython 3.12, manylinux x86_64 ({len(sizes)} packages; PyPI JSON metadata; torch "
          "2.10.0 is PyPI's CUDA 12.8 build, so no figure comes from the PyTorch index)\n")
    ranked = sorted(sizes, key=lambda r: -(r[3] or 0))
    rows = [(n, v, f, f"{s / MB:,.1f}" if s else "?") for n, v, f, s in ranked if not s or s >= MB]
    small = [s for *_, s in ranked if s and s < MB]
    rows.append((f"{len(small)} more", "", "each under 1 MB", f"{sum(small) / MB:,.1f}"))
    print(table(rows + [("total", "", "", f"{ours / MB:,.0f}")], ("package", "version", "wheel", "MB")))

    cuda_copy = sum(by_name[n] for n in SYSTEM_CUDA_COPY)
    original = ours + cuda_copy + (nvcc[3] or 0)
    print("\nCompared with the original image: runpod/pytorch (an nvidia/cuda devel base + PyTorch cu128) "
          "+ xformers built from source\n(the same Python stack either way; the OS base and apt layers are "
          "not measured on either side)\n")
    print(table([
        ("Python stack (same pins; a source-built xformers is about its wheel's size)", f"{ours / MB:,.0f}",
         f"{ours / MB:,.0f}"),
        ("devel base: a system copy of cuBLAS, cuFFT, NCCL, ... (as the same wheels)", "0", f"{cuda_copy / MB:,.0f}"),
        (f"devel base: nvcc for the xformers build ({NVCC[0]}=={NVCC[1]})", "0", f"{(nvcc[3] or 0) / MB:,.0f}"),
        ("total, lower bound for the original (headers, static libs, jupyter not counted)", f"{ours / MB:,.0f}",
         f"{original / MB:,.0f}"),
    ], ("what", "ours MB", "original MB")))
    print(f"\nours is {1 - ours / original:.0%} smaller than the original's lower bound, and builds with no "
          "compiler (the original compiled xformers for about 20 minutes).")
    if missing:
        print(f"\nNO WHEEL FOR THE IMAGE: {', '.join(missing)} (pip would have to build these from source)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
