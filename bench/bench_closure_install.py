#!/usr/bin/env python3
"""Installing the pod's training closure from a local package index: pip as the Dockerfile does, against uv.

remote_image/requirements.txt (every package pinned ==) installed by pip as the Dockerfile does it, by uv with a
cold and with a warm cache, and the keyed venv that lorapod finds already present on a network volume (a stat
and a `python -c`), all in the same run.

    python bench/bench_closure_install.py [--repeat 1] [--keep-wheels] [--uv PATH]

The index is a wheelhouse of the closure's wheels for Linux x86_64 CPython 3.12 (downloaded from the
configured indexes into bench/.cache/closure-wheels the first time; --keep-wheels keeps it for the next run),
served as a PEP 503 simple index with sha256 fragments by an HTTP server on 127.0.0.1 that counts the bytes it
sends. Each row starts from nothing but the wheelhouse: a fresh venv (and for uv cold, a fresh cache), timed
with the venv's creation; `pip check` / `uv pip check` run after each, untimed, and a failure stops the run.
Needs about 25 GB free: each venv is about 8 GB, the uv cache as much again (its wheels are hardlinked into
the venv), and each is deleted once measured.

pip compiles every module to bytecode as it installs; uv does not unless asked (--compile-bytecode), and the
Dockerfile deletes the __pycache__ pip wrote anyway. The rows use the commands as lorapod and the Dockerfile do.
"""
from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "remote_image" / "requirements.txt"
CACHE = REPO / "bench" / ".cache"
WHEELS = CACHE / "closure-wheels"
GB = 1 << 30
# pip does not widen an explicit --platform to older glibc tags, and some of the closure's wheels (bitsandbytes)
# are tagged only manylinux_2_24: list every tag a glibc 2.28 x86_64 host accepts, as pip on that host would.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    found = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                sys.exit(f"{REQUIREMENTS}: {line!r} is not pinned with ==; the closure must pin every package")
            found[canonical(name)] = version.strip()
    return found


def wheel_project(path: Path) -> tuple[str, str]:
    name, version = path.name.split("-")[:2]
    return canonical(name), version


def find_python312() -> str:
    """The pod's interpreter, found as .ci/pod_closure.sh finds it: a CPython 3.12 that can make venvs."""
    candidates = [shutil.which("python3.12")]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += [str(p) for p in sorted(pyenv.glob("versions/3.12*/bin/python3"), reverse=True,
                                          key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.parent.name)])]
    probe = ("import ensurepip, platform, sys, venv\n"
             "assert platform.python_implementation() == 'CPython' and sys.version_info[:2] == (3, 12)")
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", probe], capture_output=True).returncode == 0:
            return candidate
    sys.exit("no CPython 3.12 with venv found (python3.12 on PATH, ~/.pyenv/versions/3.12*/bin/python3); "
             "install one, e.g. apt-get install python3.12-venv")


def find_uv(given: str | None) -> str:
    for candidate in (given, REPO / ".venv" / "bin" / "uv", Path(sys.executable).parent / "uv", shutil.which("uv")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    sys.exit("uv not found: pass --uv PATH, or install the `test` extra into .venv (it brings uv)")


def clean_env(**extra: str) -> dict[str, str]:
    """Only our index counts: no pip.conf find-links/extra-index/constraints, no PIP_*/UV_* from the shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def ensure_wheelhouse(python: str) -> list[Path]:
    want = pins()

    def missing() -> list[str]:
        have = {wheel_project(p) for p in WHEELS.glob("*.whl")}
        return sorted(f"{n}=={v}" for n, v in want.items() if (n, v) not in have)

    if missing():
        WHEELS.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(WHEELS).free
        print(f"downloading the closure's wheels into {WHEELS} ({free / GB:.0f} GB free) ...", file=sys.stderr)
        cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--python-version", "3.12",
               "--implementation", "cp", "-d", str(WHEELS), "-r", str(REQUIREMENTS)]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        # The machine's own pip config (mirrors) is welcome here: this is fetching, not measuring.
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        if gone := missing():
            sys.exit(f"pip download left these without a wheel in {WHEELS}: {', '.join(gone)}")
    wheels = [p for p in sorted(WHEELS.glob("*.whl")) if wheel_project(p) in want.items()]
    if len(wheels) != len(want):
        sys.exit(f"{WHEELS} holds {len(wheels)} wheels for {len(want)} pins (two builds of one pin?); delete it")
    return wheels


def sha256s(wheels: list[Path]) -> dict[str, str]:
    """Hashes for the index's #sha256= fragments, cached by name, size and mtime (torch alone is ~900 MB)."""
    memo_path = WHEELS / ".sha256.json"
    memo = json.loads(memo_path.read_text()) if memo_path.exists() else {}
    out = {}
    for wheel in wheels:
        st = wheel.stat()
        key = f"{wheel.name}:{st.st_size}:{st.st_mtime_ns}"
        if key not in memo:
            digest = hashlib.sha256()
            with wheel.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            memo[key] = digest.hexdigest()
        out[wheel.name] = memo[key]
    memo_path.write_text(json.dumps(memo, indent=0))
    return out


class Index:
    """A PEP 503 simple index over the wheelhouse on 127.0.0.1, counting the bytes of wheels it sends."""

    def __init__(self, wheels: list[Path]):
        hashes = sha256s(wheels)
        self.files = {w.name: w for w in wheels}
        self.projects: dict[str, list[Path]] = {}
        for wheel in wheels:
            self.projects.setdefault(wheel_project(wheel)[0], []).append(wheel)
        self.pages = {"/simple/": self._page("Simple index", [(f"{n}/", n) for n in sorted(self.projects)])}
        for name, files in self.projects.items():
            self.pages[f"/simple/{name}/"] = self._page(
                f"Links for {name}", [(f"/files/{w.name}#sha256={hashes[w.name]}", w.name) for w in files])
        self.served = 0
        self.lock = threading.Lock()
        index = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real index serves

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(body=False)

            def _answer(self, body: bool) -> None:
                path = self.path.split("?", 1)[0]
                if path.startswith("/simple/") and not path.endswith("/"):
                    path += "/"
                if path.startswith("/simple/") and path != "/simple/":
                    path = f"/simple/{canonical(path[len('/simple/'):-1])}/"
                if path in index.pages:
                    data = index.pages[path]
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if body:
                        self.wfile.write(data)
                    return
                wheel = index.files.get(path[len("/files/"):]) if path.startswith("/files/") else None
                if wheel is None:
                    self.send_error(404)
                    return
                size = wheel.stat().st_size
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                if body:
                    with wheel.open("rb") as f:
                        sent = self.connection.sendfile(f)
                    with index.lock:
                        index.served += sent

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def _page(title: str, links: list[tuple[str, str]]) -> bytes:
        anchors = "\n".join(f'<a href="{html.escape(h)}">{html.escape(t)}</a><br/>' for h, t in links)
        return (f"<!DOCTYPE html>\n<html><head><title>{title}</title></head><body>\n<h1>{title}</h1>\n"
                f"{anchors}\n</body></html>\n").encode()

    def take_served(self) -> int:
        with self.lock:
            served, self.served = self.served, 0
        return served


def run(cmd: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        sys.exit(f"FAILED ({done.returncode}): {' '.join(cmd)}\n--- last lines of {log} ---\n{tail}")


def timed(cmds: list[list[str]], env: dict[str, str], log: Path) -> float:
    start = time.monotonic()
    for cmd in cmds:
        run(cmd, env, log)
    return time.monotonic() - start


def tree_mb(root: Path) -> float:
    """Bytes of the files a venv holds, each path counted (uv's hardlinks into its cache included)."""
    total = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total / 1e6


def one_round(python: str, uv: str, index: Index, work: Path, log: Path) -> dict[str, tuple[float, float, float]]:
    """{row: (seconds, MB served, venv MB)} for one pass over the four rows, each from a fresh venv."""
    rows = {}
    req = str(REQUIREMENTS)
    flags = ["--no-deps", "--only-binary", ":all:", "--index-url", index.url, "-r", req]

    venv = work / "venv-pip"
    env = clean_env()
    print("pip: venv + install ...", file=sys.stderr, flush=True)
    index.take_served()
    seconds = timed([[python, "-m", "venv", str(venv)],
                     [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir", *flags]], env, log)
    served = index.take_served()
    run([str(venv / "bin" / "python"), "-m", "pip", "check"], env, log)
    rows["pip (Dockerfile: venv + pip install --no-cache-dir)"] = (seconds, served / 1e6, tree_mb(venv))
    shutil.rmtree(venv)

    uv_cache = work / "uv-cache"
    env = clean_env(UV_CACHE_DIR=str(uv_cache))
    cold, warm = "uv, cold cache (uv venv + uv pip install)", "uv, warm cache (same cache, fresh venv)"
    for label in (cold, warm):
        venv = work / "venv-uv"
        print(f"{label} ...", file=sys.stderr, flush=True)
        index.take_served()
        seconds = timed([[uv, "--no-config", "venv", "--python", python, str(venv)],
                         [uv, "--no-config", "pip", "install", "--python", str(venv / "bin" / "python"), *flags]],
                        env, log)
        served = index.take_served()
        run([uv, "--no-config", "pip", "check", "--python", str(venv / "bin" / "python")], env, log)
        rows[label] = (seconds, served / 1e6, tree_mb(venv))
        if label == cold:
            shutil.rmtree(venv)

    # What lorapod pays when the venv keyed by the closure's hash is already on the volume.
    start = time.monotonic()
    (venv / "bin" / "python").stat()
    subprocess.run([str(venv / "bin" / "python"), "-c", "pass"], env=env, check=True)
    rows["keyed venv present (stat + python -c pass)"] = (time.monotonic() - start, 0.0, rows[warm][2])
    shutil.rmtree(venv)
    shutil.rmtree(uv_cache)
    return rows


def version(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=clean_env())
    return (done.stdout or done.stderr).strip().splitlines()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--keep-wheels", action="store_true",
                        help=f"keep the wheelhouse ({WHEELS.relative_to(REPO)}) for the next run")
    parser.add_argument("--uv", help="the uv binary (default: .venv/bin/uv, next to this Python, or on PATH)")
    args = parser.parse_args()
    python, uv = find_python312(), find_uv(args.uv)

    CACHE.mkdir(parents=True, exist_ok=True)
    need = 25 * GB if WHEELS.exists() else 31 * GB
    free = shutil.disk_usage(CACHE).free
    if free < need:
        sys.exit(f"{CACHE}: {free / GB:.0f} GB free, this benchmark needs about {need / GB:.0f} GB "
                 "(wheelhouse, an 8 GB venv at a time, uv's cache)")

    try:
        wheels = ensure_wheelhouse(python)
        wheels_mb = sum(w.stat().st_size for w in wheels) / 1e6
        index = Index(wheels)
        work = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
        log = work.with_suffix(".log")
        print(f"index {index.url}: {len(wheels)} wheels, {wheels_mb:.0f} MB; log {log}", file=sys.stderr)
        try:
            rounds = []
            for i in range(args.repeat):
                print(f"round {i + 1}/{args.repeat}", file=sys.stderr)
                rounds.append(one_round(python, uv, index, work, log))
                print("  " + ", ".join(f"{label.split(' (')[0]} {row[0]:.2f} s" for label, row in rounds[-1].items()),
                      file=sys.stderr, flush=True)
            log.unlink()  # kept only when a step failed: the failure message points to it
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if not args.keep_wheels:
            shutil.rmtree(WHEELS, ignore_errors=True)

    print(f"closure: {REQUIREMENTS.relative_to(REPO)}, {len(wheels)} wheels, {wheels_mb:.0f} MB, "
          "served from 127.0.0.1")
    print(f"python {python} ({version([python, '--version'])}); {version([python, '-m', 'pip', '--version'])}; "
          f"{version([uv, '--version'])}; {os.cpu_count()} CPUs, load average {os.getloadavg()[1]:.1f} (5 min); "
          f"median of {args.repeat}")
    print(f"\n{'method':<52} {'seconds':>8} {'MB served':>10} {'venv MB':>8} {'vs pip':>7}")
    pip_s = statistics.median(r[next(iter(r))][0] for r in rounds)
    for label in rounds[0]:
        seconds = statistics.median(r[label][0] for r in rounds)
        served = statistics.median(r[label][1] for r in rounds)
        size = statistics.median(r[label][2] for r in rounds)
        print(f"{label:<52} {seconds:>8.2f} {served:>10.0f} {size:>8.0f} {pip_s / seconds:>6.1f}x")


if __name__ == "__main__":
    main()
