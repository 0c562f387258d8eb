#!/usr/bin/env bash
# The pod's Python environment on this machine: remote_image/requirements.txt installed into ./.venv-pod under
# CPython 3.12 the way remote_image/Dockerfile installs it (--no-deps, wheels only, then a check), so the
# tests can train under the pod's exact versions:
#   .ci/pod_closure.sh && LORAPOD_POD_PYTHON=$PWD/.venv-pod/bin/python .venv/bin/python -m pytest tests/remote_image
# A .venv-pod that already holds this closure (same requirements.txt, same interpreter) is kept as it is.
# `uv pip check` stands for the Dockerfile's `pip check`: the venv has no pip of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
requirements=remote_image/requirements.txt
venv=.venv-pod

# The pod runs CPython 3.12 (the Dockerfile's python3.12). A pyenv shim named python3.12 can exist and still
# fail, so each candidate has to run and say it is a CPython 3.12 with venv and ensurepip.
is_pod_python() {
  "$1" -c 'import ensurepip, platform, sys, venv
assert platform.python_implementation() == "CPython" and sys.version_info[:2] == (3, 12)' >/dev/null 2>&1
}
pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
candidates=()
command -v python3.12 >/dev/null && candidates+=("$(command -v python3.12)")
while IFS= read -r found; do candidates+=("$found"); done < <(
  compgen -G "$pyenv_root/versions/3.12*/bin/python3" | sort -rV || true)
python=
for candidate in ${candidates[@]+"${candidates[@]}"}; do
  if is_pod_python "$candidate"; then python=$candidate; break; fi
done
if [ -z "$python" ]; then
  echo "pod_closure.sh: no CPython 3.12 with venv found (looked for python3.12 on PATH and" \
    "$pyenv_root/versions/3.12*/bin/python3); install one, e.g. apt-get install python3.12-venv" >&2
  exit 1
fi

# The pod's own installer (remote_image/install_closure.sh), so .venv-pod carries the stamp a pod's venv does
# (lorapod-closure.json: requirements sha256 and this interpreter): a test can present it as a volume that
# already holds the closure (tests/closure_seed.py). It says "nothing to install", asking no index, when
# .venv-pod holds this closure already. uv comes from .venv (the `test` extra pins the installer's version),
# else the installer finds or installs its own under ~/.cache/lorapod; downloads go to this machine's uv cache.
args=(--venv "$venv" --requirements "$requirements" --python "$python" --root "$HOME/.cache/lorapod"
  --cache-dir "${UV_CACHE_DIR:-$HOME/.cache/uv}")
if [ -x .venv/bin/uv ]; then
  args+=(--uv .venv/bin/uv)
fi
bash remote_image/install_closure.sh "${args[@]}" | sed -u 's/^lorapod-closure: /pod_closure.sh: /'
echo "pod_closure.sh: $venv holds $requirements for Python $("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])')" \
  "($((SECONDS - started))s)"
