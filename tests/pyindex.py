"""A real package index for tests: valid wheels built here, served as a PEP 503 "simple" index over HTTP on
127.0.0.1, every request recorded. uv and pip install from it as they would from PyPI; nothing leaves loopback.

    index = PackageIndex(tmp_path / "wheels")
    index.add(build_wheel(index.folder, "lorapod-tiny-a", "1.0"))
    with index.serving() as url:          # url: http://127.0.0.1:<port>/simple
        ...                               # uv pip install --index-url <url> lorapod-tiny-a==1.0
    index.requests                        # ["/simple/lorapod-tiny-a/", "/files/lorapod_tiny_a-1.0-py3-none-any.whl"]
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import importlib.metadata
import re
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.loopback import serving

HOLD_S = 60  # the longest a held download waits for release(): a bound for a stuck test, never a measurement


def normalize(name: str) -> str:
    """PEP 503's normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _escaped(name: str) -> str:
    """A distribution name as wheel file names spell it (PEP 427: runs of -_. become one underscore)."""
    return re.sub(r"[-_.]+", "_", name)


def _compressed(tags: tuple[str, ...]) -> str:
    """The file name's tag part (PEP 425's compressed tag set): py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64."""
    parts: list[list[str]] = [[], [], []]
    for tag in tags:
        for i, part in enumerate(tag.split("-")):
            if part not in parts[i]:
                parts[i].append(part)
    return "-".join(".".join(p) for p in parts)


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def write_wheel(folder: Path, name: str, version: str, files: dict[str, bytes], tags: tuple[str, ...] = ("py3-none-any",),
                metadata_extra: str = "", executables: tuple[str, ...] = (), purelib: bool = True,
                dist_info_files: dict[str, bytes] | None = None, store: bool = False,
                metadata: str | None = None) -> Path:
    """A wheel (PEP 427) holding `files` (archive name -> bytes), with METADATA, WHEEL and a RECORD whose hashes
    and sizes are right, so that installers accept it. `executables` get mode 0755 in the archive."""
    folder.mkdir(parents=True, exist_ok=True)
    dist_info = f"{_escaped(name)}-{version}.dist-info"
    path = folder / f"{_escaped(name)}-{version}-{_compressed(tags)}.whl"
    wheel = "Wheel-Version: 1.0\nGenerator: lorapod-tests\nRoot-Is-Purelib: {}\n{}".format(
        "true" if purelib else "false", "".join(f"Tag: {t}\n" for t in tags))
    meta = metadata or f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{metadata_extra}"
    entries = dict(files)
    entries.update({f"{dist_info}/{k}": v for k, v in (dist_info_files or {}).items()})
    entries[f"{dist_info}/METADATA"] = meta.encode()
    entries[f"{dist_info}/WHEEL"] = wheel.encode()
    record = [_record_line(arcname, data) for arcname, data in entries.items()] + [f"{dist_info}/RECORD,,"]
    entries[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED if store else zipfile.ZIP_DEFLATED) as archive:
        for arcname, data in entries.items():
            info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o100755 if arcname in executables else 0o100644) << 16  # S_IFREG: pip checks it
            info.compress_type = archive.compression
            archive.writestr(info, data)
    return path


def build_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A tiny pure-Python wheel: one module, named after the project, that knows its version."""
    module = _escaped(name).lower()
    extra = "".join(f"Requires-Dist: {r}\n" for r in requires)
    return write_wheel(folder, name, version, {f"{module}/__init__.py": f"VERSION = {version!r}\n".encode()},
                       metadata_extra=extra)


def repack_installed(distribution: str, folder: Path) -> Path:
    """The wheel an installed distribution came from, rebuilt from its installed files (RECORD lists them):
    e.g. uv, whose wheel carries the real uv binary as a script. Installer bookkeeping (INSTALLER,
    REQUESTED, direct_url.json, RECORD) and byte code are left out; files outside site-packages go back to
    <name>-<version>.data/scripts/."""
    dist = importlib.metadata.distribution(distribution)
    name, version = dist.metadata["Name"], dist.version
    dist_info = f"{_escaped(name)}-{version}.dist-info"
    tags = tuple(line.split(": ", 1)[1] for line in (dist.read_text("WHEEL") or "").splitlines()
                 if line.startswith("Tag: "))
    purelib = "Root-Is-Purelib: true" in (dist.read_text("WHEEL") or "")
    files, extra, scripts = {}, {}, []
    for entry in dist.files or []:
        rel = str(entry)
        if "__pycache__" in rel or rel.endswith(".pyc"):
            continue
        data = Path(entry.locate()).read_bytes()
        if rel.startswith("../"):
            arcname = f"{_escaped(name)}-{version}.data/scripts/{Path(rel).name}"
            files[arcname] = data
            scripts.append(arcname)
        elif rel.startswith(dist_info + "/"):
            inner = rel[len(dist_info) + 1:]
            if inner not in ("INSTALLER", "REQUESTED", "RECORD", "direct_url.json", "METADATA", "WHEEL"):
                extra[inner] = data
        else:
            files[rel] = data
    return write_wheel(folder, name, version, files, tags=tags or ("py3-none-any",), executables=tuple(scripts),
                       purelib=purelib, dist_info_files=extra, store=True, metadata=dist.read_text("METADATA"))


@dataclass
class PackageIndex:
    """Wheels in `folder`, served as /simple/<project>/ pages linking /files/<wheel>#sha256=<digest>.

    `requests` lists every path asked for, in order. `hold()` makes wheel downloads wait until `release()`
    (or HOLD_S), so a test can watch what an installer does while a download is under way."""

    folder: Path
    requests: list[str] = field(default_factory=list)
    _wheels: dict[str, list[Path]] = field(default_factory=dict)
    _released: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._released.set()
        self.folder.mkdir(parents=True, exist_ok=True)

    def add(self, wheel: Path) -> Path:
        project = normalize(wheel.name.split("-", 1)[0])
        self._wheels.setdefault(project, []).append(wheel)
        return wheel

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def downloads(self) -> list[str]:
        return [r for r in self.requests if r.startswith("/files/")]

    @contextlib.contextmanager
    def serving(self):
        index = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                index.requests.append(path)
                parts = [p for p in path.split("/") if p]
                if parts == ["simple"]:
                    links = "".join(f'<a href="/simple/{p}/">{p}</a>\n' for p in sorted(index._wheels))
                    return self._send(200, "text/html", _page("Simple index", links))
                if len(parts) == 2 and parts[0] == "simple":
                    wheels = index._wheels.get(normalize(parts[1]))
                    if wheels is None:
                        return self._send(404, "text/plain", b"not found\n")
                    links = "".join(f'<a href="/files/{html.escape(w.name)}#sha256={_sha256(w)}">'
                                    f"{html.escape(w.name)}</a>\n" for w in wheels)
                    return self._send(200, "text/html", _page(f"Links for {parts[1]}", links))
                if len(parts) == 2 and parts[0] == "files":
                    wheel = index.folder / parts[1]
                    if "/" in parts[1] or not wheel.is_file():
                        return self._send(404, "text/plain", b"not found\n")
                    index._released.wait(HOLD_S)
                    return self._send(200, "application/octet-stream", wheel.read_bytes())
                return self._send(404, "text/plain", b"not found\n")

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        with serving(Handler) as base:
            yield base + "/simple"


def _page(title: str, body: str) -> bytes:
    return (f"<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.0\">"
            f"<title>{title}</title></head><body>\n{body}</body></html>\n").encode()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
