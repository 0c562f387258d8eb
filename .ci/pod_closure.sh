#!/usr/bin/env bash
# The pod's Python environment on this machine: remote_image/requirements.txt installed into ./.venv-pod under
# CPython 3.12 the way remote_image/Dockerfile installs it (--no-deps, wheels only, then pip check), so the
# tests can train under the pod's exact versions:
#   .ci/pod_closure.sh && LORAPOD_POD_PYTHON=$PWD/.venv-pod/bin/python .venv/bin/python -m pytest tests/remote_image
# A .venv-pod that already holds this closure (same requirements.txt, same interpreter) is kept as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
requirements=remote_image/requirements.txt
venv=.venv-pod
stamp=$venv/lorapod-closure.stamp

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

want="$(sha256sum "$requirements" | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version.split()[0])')"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "pod_closure.sh: $venv already holds $requirements for Python ${want#* } ($((SECONDS - started))s)"
  exit 0
fi

rm -rf "$venv"
"$python" -m venv "$venv"
# uv installs the closure about 5x faster than pip cold (and in seconds from its cache); the same flags as the
# Dockerfile's pip. It comes from .venv (the `test` extra), PATH, or else a throwaway venv of its own.
if [ -x .venv/bin/uv ]; then
  uv=.venv/bin/uv
elif command -v uv >/dev/null; then
  uv=$(command -v uv)
else
  bootstrap=$(mktemp -d)
  trap 'rm -rf "$bootstrap"' EXIT
  "$python" -m venv "$bootstrap"
  "$bootstrap/bin/python" -m pip install --quiet --disable-pip-version-check uv
  uv=$bootstrap/bin/uv
fi
echo "pod_closure.sh: installing $requirements into $venv with $uv ($python)"
"$uv" pip install --quiet --python "$venv/bin/python" --no-deps --only-binary :all: -r "$requirements"
# The Dockerfile's own gate: the closure is complete and consistent.
"$venv/bin/python" -m pip check --disable-pip-version-check
echo "$want" >"$stamp"
echo "pod_closure.sh: $venv ready, Python ${want#* }, in $((SECONDS - started))s"
