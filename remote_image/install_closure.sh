#!/usr/bin/env bash
# The pinned training closure (remote_image/requirements.txt: every package ==) installed with uv into a venv,
# once per closure and place. lorapod's probe runs it on the pod over SSH, for images that do not carry the
# closure themselves (image=runpod); .ci/pod_closure.sh runs it on this machine for .venv-pod.
#
#   bash install_closure.sh --venv DIR --requirements FILE --python REQUEST [--index-url URL]
#        [--root DIR] [--cache-dir DIR] [--uv PATH] [--progress-every SECONDS] [--wait SECONDS]
#
#   --venv DIR         the venv; lorapod names it <workdir>/.lorapod/venvs/<hash of FILE and REQUEST>
#   --requirements     the closure, installed as the Dockerfile installs it: no dependency resolution of its
#                      own (--no-deps), wheels only, then a consistency check (uv pip check)
#   --python REQUEST   the interpreter the venv is made from, as uv's --python takes it: a version (3.12) or a
#                      path. uv never downloads one: the image's own is used, or the install fails saying so
#   --index-url URL    the package index (default: uv's and pip's, i.e. PyPI); pip and uv configuration files
#                      are ignored, so this is the one index asked
#   --root DIR         where uv itself (DIR/.tools/uv-<version>) and its cache (DIR/cache/uv) go; default: two
#                      folders above the venv (<workdir>/.lorapod). On a network volume both outlive the pod, and
#                      the cache hardlinks into the venv (one filesystem), so the wheels take their space once
#   --cache-dir DIR    uv's cache instead of <root>/cache/uv
#   --uv PATH          this uv binary instead of finding one
#   --progress-every   seconds between progress lines while installing (default 10): uv prints none without a TTY
#   --wait SECONDS     the longest wait for another run's install of the same venv (DIR.lock; default 1800): a
#                      lock that is never released must not keep a billing pod waiting
#
# Runs in an SSH session's fresh environment (no container variables, sshd's default PATH), needing bash, flock,
# coreutils and, when no uv of the pinned version is found, python3 with pip. Its lines for the user start with
# "lorapod-closure: "; the rest (uv's per-package lines) is detail. Exit 0: the venv holds the closure; 1: it
# does not (the last line says what failed, and no stamp was written); 2: bad arguments.
#
# A venv is complete when DIR/lorapod-closure.json (requirements sha256, python request) matches and DIR's
# python runs: then nothing is installed and no index is asked. The stamp is written last and atomically, so a
# DIR without it is a partial install (a run cut short): it is removed and installed again. Two runs sharing a
# network volume take turns on DIR.lock (flock); the second finds the first's venv ready and installs nothing.
set -euo pipefail

# uv's version, pinned: the test extra in pyproject.toml pins the same (tests check that they agree).
UV_VERSION=0.13.9
PREFIX="lorapod-closure:"

say() { printf '%s %s\n' "$PREFIX" "$*"; }
fail() {
    say "error: $*"
    exit 1
}
usage() {
    say "error: $*"
    say "usage: install_closure.sh --venv DIR --requirements FILE --python REQUEST [--index-url URL] [--root DIR]" \
        "[--cache-dir DIR] [--uv PATH] [--progress-every SECONDS] [--wait SECONDS]"
    exit 2
}
absolute() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }

venv="" requirements="" python_request="" index_url="" root="" cache="" uv_bin="" every=10 wait=1800
while [[ $# -gt 0 ]]; do
    [[ $# -ge 2 ]] || usage "$1 needs a value"
    case "$1" in
        --venv) venv=$2 ;;
        --requirements) requirements=$2 ;;
        --python) python_request=$2 ;;
        --index-url) index_url=$2 ;;
        --root) root=$2 ;;
        --cache-dir) cache=$2 ;;
        --uv) uv_bin=$2 ;;
        --progress-every) every=$2 ;;
        --wait) wait=$2 ;;
        *) usage "unknown argument $1" ;;
    esac
    shift 2
done
[[ -n "$venv" ]] || usage "--venv is required"
[[ -n "$requirements" ]] || usage "--requirements is required"
[[ -n "$python_request" ]] || usage "--python is required"
[[ "$every" =~ ^[1-9][0-9]*$ ]] || usage "--progress-every must be a whole number of seconds (got $every)"
[[ "$wait" =~ ^[0-9]+$ ]] || usage "--wait must be a whole number of seconds (got $wait)"
[[ -f "$requirements" && -r "$requirements" ]] || fail "the requirements file $requirements is not a readable file"
[[ "${venv%/}" != "" ]] || usage "--venv must not be /"
venv=$(absolute "${venv%/}")
requirements=$(absolute "$requirements")
root=$(absolute "${root:-$(dirname "$(dirname "$venv")")}")
cache=$(absolute "${cache:-$root/cache/uv}")
[[ "$venv" != "$root" ]] || usage "--venv $venv must be a folder of its own, below --root"

want_sha=$(sha256sum "$requirements" | cut -d' ' -f1)
stamp="$venv/lorapod-closure.json"
packages=$(grep -cE '^[[:space:]]*[A-Za-z0-9]' "$requirements" || true)

# Whether $venv holds this closure: its stamp matches and its python runs (it reads the stamp). Silent.
ready() {
    [[ -f "$stamp" && -x "$venv/bin/python" ]] || return 1
    "$venv/bin/python" - "$stamp" "$want_sha" "$python_request" >/dev/null 2>&1 <<'PY'
import json, sys
stamp = json.load(open(sys.argv[1]))
sys.exit(0 if stamp.get("requirements_sha256") == sys.argv[2] and stamp.get("python") == sys.argv[3] else 1)
PY
}

nothing_to_install() {
    say "nothing to install: $venv already holds this closure ($packages packages, Python $python_request)$1"
    exit 0
}

if ready; then
    nothing_to_install ""
fi

command -v flock >/dev/null || fail "flock (util-linux) is not on PATH: it keeps two installs of one venv apart"
mkdir -p "$(dirname "$venv")" || fail "cannot create $(dirname "$venv")"
exec 9>"$venv.lock" || fail "cannot open the lock file $venv.lock"
if ! flock -n 9; then
    say "another run is installing this closure (lock $venv.lock): waiting for it, ${wait}s at most"
    flock -w "$wait" 9 || fail "another run held $venv.lock for over ${wait}s: it may have died holding it on" \
        "another pod (a network volume), or be stuck; run again, or delete $venv and $venv.lock from the volume"
fi
if ready; then
    nothing_to_install ", installed by another run meanwhile"
fi

started=$(date +%s)
progress_pid=""
installing=false
cleanup() {
    local status=$?
    if [[ -n "$progress_pid" ]]; then
        kill "$progress_pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 ]] && $installing; then
        rm -rf "$venv"  # no stamp was written: whatever is there is a partial install
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [[ -e "$venv" || -L "$venv" ]]; then
    if [[ ! -f "$stamp" ]]; then
        why="it has no stamp: a partial install"
    elif [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c '' 2>/dev/null; then
        why="its python does not run"
    else
        why="its stamp is for other requirements or another Python"
    fi
    say "removing $venv: $why"
    rm -rf "$venv" || fail "cannot remove $venv"
fi

# uv's own lines: the per-package ones (" + name==version") stay detail, the rest is for the user.
uv_lines() {
    local line
    while IFS= read -r line; do
        case "$line" in
            " + "* | " - "* | "Activate with"*) printf '%s\n' "$line" ;;
            *) say "uv: $line" ;;
        esac
    done
}

pinned_uv() { [[ -x "$1" ]] && [[ "$("$1" --version 2>/dev/null | cut -d' ' -f2)" == "$UV_VERSION" ]]; }

index=()
if [[ -n "$index_url" ]]; then
    index=(--index-url "$index_url")
fi

install_uv() {
    local tools="$root/.tools/uv-$UV_VERSION" tmp log
    if ! command -v python3 >/dev/null; then
        fail "no uv $UV_VERSION on PATH and no python3 to install it with: put uv $UV_VERSION on the image" \
            "(https://docs.astral.sh/uv/getting-started/installation/)"
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        fail "no uv $UV_VERSION on PATH, and $(command -v python3) has no pip to install it with: add pip to the" \
            "image (apt-get install -y python3-pip) or uv $UV_VERSION" \
            "(https://docs.astral.sh/uv/getting-started/installation/)"
    fi
    say "installing uv $UV_VERSION into $tools with pip (${index_url:-PyPI})"
    mkdir -p "$root/.tools" || fail "cannot create $root/.tools"
    tmp=$(mktemp -d "$root/.tools/uv-$UV_VERSION.XXXXXX") || fail "cannot create a folder in $root/.tools"
    log="$tmp.log"
    # --target is not the system's site-packages, so PEP 668 does not refuse it. No pip configuration: only
    # the index we were given (or PyPI) is asked.
    if ! PIP_CONFIG_FILE=/dev/null PIP_ROOT_USER_ACTION=ignore python3 -m pip install --disable-pip-version-check \
        --no-cache-dir --no-input --quiet --target "$tmp" --no-deps --only-binary :all: ${index[@]+"${index[@]}"} \
        "uv==$UV_VERSION" >"$log" 2>&1; then
        while IFS= read -r line; do say "pip: $line"; done <"$log"
        rm -rf "$tmp" "$log"
        fail "pip could not install uv $UV_VERSION from ${index_url:-PyPI} (its words above)"
    fi
    rm -f "$log"
    if [[ -e "$tools" ]] && ! pinned_uv "$tools/bin/uv"; then
        rm -rf "$tools"
    fi
    # A rename: another run sharing the volume either finds the whole of it or none. If one got there first,
    # its copy is kept and ours dropped.
    mv -T "$tmp" "$tools" 2>/dev/null || rm -rf "$tmp"
    pinned_uv "$tools/bin/uv" || fail "uv $UV_VERSION installed by pip into $tools does not run"
    uv_bin="$tools/bin/uv"
}

if [[ -n "$uv_bin" ]]; then
    [[ -x "$uv_bin" ]] || fail "--uv $uv_bin is not an executable"
elif pinned_uv "$root/.tools/uv-$UV_VERSION/bin/uv"; then
    uv_bin="$root/.tools/uv-$UV_VERSION/bin/uv"
elif command -v uv >/dev/null && pinned_uv "$(command -v uv)"; then
    uv_bin=$(command -v uv)
else
    install_uv
fi

# Only the index given (no uv.toml of the machine's), uv's cache where it outlives the pod, and never a
# downloaded Python.
export UV_CACHE_DIR="$cache" UV_NO_CONFIG=1 UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1
installing=true
say "making $venv from Python $python_request with uv $("$uv_bin" --version | cut -d' ' -f2)"
"$uv_bin" venv --python "$python_request" "$venv" 2>&1 | uv_lines ||
    fail "uv venv could not make $venv from Python '$python_request' (uv's words above): is that interpreter on" \
        "the machine? Give --python a version it has, or a path"

# du exits 1 when a file vanishes mid-walk (uv renames its temporary folders), and pipefail would make that the
# pipeline's status: the size it printed is still good, and 0 stands in when it printed none.
mb_cached() {
    local mb
    mb=$({ du -sm "$cache" 2>/dev/null || true; } | tail -n 1 | cut -f1)
    printf '%s\n' "${mb:-0}"
}
mkdir -p "$cache" || fail "cannot create uv's cache $cache"
before_mb=$(mb_cached)
progress() {
    # sleep must not hold our stdout: an SSH session ends only when every holder of it has closed it.
    while sleep "$every" >/dev/null 2>&1; do
        say "installing: $(($(mb_cached) - before_mb)) MB downloaded, $(($(date +%s) - started))s"
    done
}
say "installing $packages packages from $requirements with uv (${index_url:-PyPI}; cache $cache)"
progress &
progress_pid=$!
"$uv_bin" pip install --python "$venv/bin/python" --no-deps --only-binary :all: ${index[@]+"${index[@]}"} \
    -r "$requirements" 2>&1 | uv_lines ||
    fail "uv pip install of $requirements failed (uv's words above): a pin missing from the index, no wheel" \
        "for this Python or platform, or the index unreachable"
kill "$progress_pid" 2>/dev/null || true
wait "$progress_pid" 2>/dev/null || true
progress_pid=""
"$uv_bin" pip check --python "$venv/bin/python" 2>&1 | uv_lines ||
    fail "the installed closure is not consistent (uv pip check, above): $requirements must list every" \
        "dependency of every package, pinned"

"$venv/bin/python" - "$want_sha" "$python_request" "$packages" "$UV_VERSION" >"$stamp.tmp" <<'PY' ||
import json, platform, sys, time
json.dump({"requirements_sha256": sys.argv[1], "python": sys.argv[2], "python_version": platform.python_version(),
           "packages": int(sys.argv[3]), "uv": sys.argv[4], "installed_at": int(time.time())}, sys.stdout)
PY
    fail "cannot write the stamp $stamp"
mv -f "$stamp.tmp" "$stamp" || fail "cannot write the stamp $stamp"
installing=false
say "installed $packages packages into $venv in $(($(date +%s) - started))s ($(($(mb_cached) - before_mb)) MB downloaded)"
