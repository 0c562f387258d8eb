#!/usr/bin/env bash
# Set up lorapod in ./.venv on a fresh Debian machine with Python 3.11.
#   ./setup.sh          the orchestrator and the CPU training stack (enough for `python run.py`)
#   ./setup.sh --test   also the test tools and OpenSSH's sshd (the tests' stand-in for a pod)
set -euo pipefail
cd "$(dirname "$0")"
with_tests=false
[ "${1:-}" = "--test" ] && with_tests=true

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
need_debs=()
python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null \
  || { echo "setup.sh: lorapod needs Python >= 3.11 as python3" >&2; exit 1; }
python3 -c 'import ensurepip, venv' 2>/dev/null || need_debs+=(python3-venv)
if $with_tests && [ ! -x /usr/sbin/sshd ]; then need_debs+=(openssh-server); fi
# llama-cpp-python (test extra) ships no wheel on PyPI for Linux: pip builds llama.cpp with cmake and a C++ compiler
if $with_tests; then
  command -v cmake >/dev/null || need_debs+=(cmake)
  command -v g++ >/dev/null || need_debs+=(g++)
fi
if [ ${#need_debs[@]} -gt 0 ]; then
  echo "setup.sh: installing ${need_debs[*]} with apt-get"
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_debs[@]}" \
    || { echo "setup.sh: could not install ${need_debs[*]}; install them and run again" >&2; exit 1; }
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first, pinned: an open range would pull a multi-GB CUDA build onto a CPU machine where a CPU wheel is at hand.
.venv/bin/python -c 'import torch' 2>/dev/null || "${pip[@]}" "${LORAPOD_TORCH:-torch==2.13.0}"
extras=train
$with_tests && extras=train,test
# GGML_NATIVE=OFF: a portable llama.cpp build (the default tunes for this CPU and can crash on another)
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" "${pip[@]}" -e ".[${extras}]"
# unsloth's declared dependencies are CUDA-only (xformers, triton, bitsandbytes): on CPU it needs none of them.
read -r -a no_deps < <(.venv/bin/python -c \
  "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['tool']['lorapod']['train-no-deps']))")
"${pip[@]}" --no-deps "${no_deps[@]}"
echo "setup.sh: ready (.venv)"
