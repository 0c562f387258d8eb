"""transport=local: the pod is this machine; commands run under bash, files are copied."""
from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from pathlib import Path

from engine.hashing import sha256_file
from engine.errors import TransportError
from engine.secrets import is_secret_name
from engine.transport.base import (LineAssembler, LineSink, check_max_bytes, check_sha256, folders_between,
                                   symlink_refused)


class LocalTransport:
    def exec(self, command: str, on_line: LineSink | None = None, timeout: float | None = None) -> int:
        # None of our secrets in the "pod's" environment, as none would be in a real pod's SSH session.
        env = {k: v for k, v in os.environ.items() if not is_secret_name(k)}
        proc = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
        lines = LineAssembler(on_line)  # not readline(): a line without a newline would be read whole
        try:
            while data := proc.stdout.read1(65536):
                lines.feed(data)
            lines.close()
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            raise TransportError(f"command timed out after {timeout}s: {command[:80]}") from exc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def put(self, local: Path, remote: str) -> str:
        return self._copy(Path(local), Path(remote), sha256_file(local))

    def get(self, remote: str, local: Path, sha256: str | None = None, max_bytes: int | None = None) -> str:
        return self._copy(Path(remote), Path(local), sha256, max_bytes, from_pod=True)

    def size(self, remote: str, within: str | None = None) -> int:
        for path in [*folders_between(within, remote), remote]:  # lstat: a link is seen, never followed
            try:
                info = os.lstat(path)
            except OSError as exc:
                raise TransportError(f"no such file: {remote} ({exc.strerror})") from exc
            if stat.S_ISLNK(info.st_mode):
                raise symlink_refused(path, remote)
        if not stat.S_ISREG(info.st_mode):
            raise TransportError(f"{remote} is not a regular file")
        return info.st_size

    def write_private(self, remote: str, data: bytes) -> None:
        path = Path(remote)
        path.unlink(missing_ok=True)  # O_CREAT keeps an existing file's mode: start from none
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, data)
        finally:
            os.close(fd)

    @staticmethod
    def _copy(src: Path, dst: Path, expected: str | None, max_bytes: int | None = None, from_pod: bool = False) -> str:
        if not src.is_file():
            raise TransportError(f"no such file: {src}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        try:
            _copy_at_most(src, tmp, max_bytes, from_pod)
            actual = sha256_file(tmp)
            check_sha256(str(dst), expected, actual)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(dst)
        return actual

    def close(self) -> None:
        pass


def _copy_at_most(src: Path, dst: Path, max_bytes: int | None, from_pod: bool = False) -> None:
    """Copies in blocks and stops one byte past max_bytes: a file still being written (or /dev/zero behind a
    link) cannot fill the disk before the check. From the pod, the source is opened without following a link."""
    if max_bytes is None and not from_pod:
        shutil.copyfile(src, dst)  # sendfile: no Python loop for a big upload (your own files: links are fine)
        return
    copied = 0
    with (_open_pod_file(src) if from_pod else open(src, "rb")) as fin, open(dst, "wb") as fout:
        if max_bytes is None:
            shutil.copyfileobj(fin, fout, 1 << 20)
            return
        while block := fin.read(min(1 << 20, max_bytes - copied + 1)):
            copied += len(block)
            check_max_bytes(str(src), copied, max_bytes)
            fout.write(block)


def _open_pod_file(src: Path):
    """The pod's file for reading, refused if it is a symlink now: O_NOFOLLOW makes the kernel refuse it at
    the open itself, so a file swapped for a link after size() looked is not followed, with no window left (for
    the last component; the folders above it were checked by size(within=...), moments before)."""
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # NONBLOCK: a FIFO swapped in cannot hang us
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise symlink_refused(str(src), str(src)) from exc
        raise TransportError(f"cannot read {src} ({exc.strerror})") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise TransportError(f"{src} is not a regular file")
    return os.fdopen(fd, "rb")
