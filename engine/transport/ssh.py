"""transport=ssh (paramiko): exec with streamed output, SFTP put/get checked by sha256, reconnects.

Connecting retries with backoff until the probe's deadline, because a fresh pod's sshd is often not up
yet; a refused key or a changed host key fails at once, because waiting cannot fix either. TCP keepalives
notice a dead network within about half a minute, so the train stage can reconnect while training goes on.
"""
from __future__ import annotations

import posixpath
import shlex
import socket
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from loguru import logger

from engine.closure import stdlib_python
from engine.errors import HostKeyError, TransportError
from engine.hashing import sha256_file
from engine.sshkeys import PinHostKey
from engine.transport.base import (LineAssembler, LineSink, check_max_bytes, check_sha256, folders_between,
                                   symlink_refused)

# Long fat links: a channel window of 64 MB keeps a 50 ms round trip busy at over 1 GB/s, where paramiko's
# default 2 MB caps it near 40 MB/s. 256 KB packets (OpenSSH's maximum) cut paramiko's per-packet Python work.
WINDOW_SIZE = 64 * 1024 * 1024
MAX_PACKET_SIZE = 256 * 1024
RETRYABLE = (OSError, EOFError, paramiko.SSHException)
READ_REQUEST = 256 * 1024  # OpenSSH's sftp-server serves reads up to this size
READS_IN_FLIGHT = 32  # 8 MB asked for at a time per lane keeps a long link full
LANES = 4  # parallel SFTP sessions for a big file: measured 2-4x faster on a 50 ms link, and on loopback
PARALLEL_FROM = 8 * 1024 * 1024


@dataclass
class SshTarget:
    host: str
    port: int
    user: str
    key_path: Path
    known_hosts: Path  # the run's own: every host key it has seen, enforced on later connections
    expected_host_keys: list[str] = field(default_factory=list)  # `<type> SHA256:<fp>` from the pod's log
    trusted_known_hosts: Path | None = None  # e.g. ~/.ssh/known_hosts for a machine you already know
    python: str = "python3"  # hashes files on the far side (hashlib: several times faster than sha256sum)

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def _keepalive_socket(host: str, port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
    return sock


class SshTransport:
    def __init__(self, target: SshTarget, connect_timeout_s: float = 15.0):
        self.target = target
        self.connect_timeout_s = connect_timeout_s
        self.client: paramiko.SSHClient | None = None
        self._sftp: list[paramiko.SFTPClient] = []  # lanes, see _lanes()
        self._folders: set[str] = set()  # made on the pod already
        # How the host key was trusted at the first connection: pinned_from_log (it matched a key the pod's log
        # announced), first_contact (nothing to check it against), known_hosts (a known_hosts file had it)
        self.host_key: str | None = None

    @classmethod
    def connect(cls, endpoint, ctx) -> SshTransport:
        target = SshTarget(
            host=endpoint.host, port=endpoint.port, user=endpoint.user, key_path=Path(endpoint.key_path),
            known_hosts=ctx.run_dir / "ssh" / "known_hosts", expected_host_keys=list(endpoint.host_keys or []),
            trusted_known_hosts=Path(endpoint.trusted_known_hosts) if endpoint.trusted_known_hosts else None,
            python=stdlib_python(ctx))
        transport = cls(target)
        transport.open(deadline_s=ctx.cfg.probe.timeout_s)
        return transport

    # -- connecting ---------------------------------------------------------------------------------

    def open(self, deadline_s: float) -> None:
        """Connect, retrying what time can fix (refused, reset, no banner yet) until deadline_s has passed."""
        started, delay, attempts = time.monotonic(), 0.5, 0
        while True:
            attempts += 1
            try:
                self._open_once()
                if attempts > 1:
                    logger.info(f"connected to {self.target.describe()} after {attempts} attempts")
                return
            except (HostKeyError, TransportError):
                raise
            except paramiko.BadHostKeyException as exc:
                raise HostKeyError(
                    f"host key for {self.target.describe()} changed since first contact: expected "
                    f"{exc.expected_key.get_name()} {exc.expected_key.fingerprint}, got "
                    f"{exc.key.get_name()} {exc.key.fingerprint}",
                    f"someone else may be answering; the pinned key is in {self.target.known_hosts}") from exc
            except paramiko.AuthenticationException as exc:
                raise TransportError(
                    f"{self.target.describe()} refused the SSH key {self.target.key_path} ({exc})",
                    "the pod did not get this run's public key (PUBLIC_KEY / SSH_PUBLIC_KEY), or for "
                    "provider=ssh the key is not in the machine's authorized_keys") from exc
            except RETRYABLE as exc:
                waited = time.monotonic() - started
                if waited + delay > deadline_s:
                    raise TransportError(f"could not reach {self.target.describe()} over SSH within "
                                         f"{deadline_s:.0f}s ({attempts} attempts; last: {exc or type(exc).__name__})",
                                         "raise probe.timeout_s if the pod is just slow to start") from exc
                logger.debug(f"ssh {self.target.describe()} not ready ({exc!r}); retrying in {delay:.1f}s")
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _open_once(self) -> None:
        self.close()
        t = self.target
        client = paramiko.SSHClient()
        if t.trusted_known_hosts and t.trusted_known_hosts.is_file():
            client.load_system_host_keys(str(t.trusted_known_hosts))
        if t.known_hosts.is_file():
            client.load_host_keys(str(t.known_hosts))
        policy = PinHostKey(t.known_hosts, t.expected_host_keys)
        client.set_missing_host_key_policy(policy)
        sock = _keepalive_socket(t.host, t.port, self.connect_timeout_s)
        try:
            client.connect(t.host, t.port, username=t.user, key_filename=str(t.key_path), sock=sock,
                           look_for_keys=False, allow_agent=False, timeout=self.connect_timeout_s,
                           banner_timeout=self.connect_timeout_s, auth_timeout=self.connect_timeout_s)
        except BaseException:
            client.close()
            sock.close()
            raise
        client.get_transport().set_keepalive(30)
        self.client = client
        if self.host_key is None:
            self.host_key = ("known_hosts" if policy.accepted is None else
                             "pinned_from_log" if t.expected_host_keys else "first_contact")

    def reconnect(self, deadline_s: float = 60.0) -> None:
        self.open(deadline_s)

    def _transport(self) -> paramiko.Transport:
        transport = self.client.get_transport() if self.client else None
        if transport is None or not transport.is_active():
            raise TransportError(f"the SSH connection to {self.target.describe()} is gone")
        return transport

    # -- running commands ---------------------------------------------------------------------------

    def exec(self, command: str, on_line: LineSink | None = None, timeout: float | None = None) -> int:
        try:
            channel = self._transport().open_session(window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE,
                                                     timeout=timeout)
            channel.set_combine_stderr(True)
            channel.settimeout(timeout)
            channel.exec_command(f"exec 2>&1; {command}")  # one stream on the pod keeps the lines in order
            lines = LineAssembler(on_line)
            while data := channel.recv(65536):
                lines.feed(data)
            lines.close()
            status = channel.recv_exit_status()
        except socket.timeout as exc:
            raise TransportError(f"command timed out after {timeout}s on {self.target.describe()}: {command[:80]}") from exc
        except RETRYABLE as exc:
            raise TransportError(f"connection to {self.target.describe()} lost: {exc or type(exc).__name__}") from exc
        if status == -1:  # the channel closed without an exit status: the connection dropped under us
            raise TransportError(f"connection to {self.target.describe()} lost while running: {command[:80]}")
        return status

    def remote_sha256(self, path: str, expected: str | None = None, move_to: str | None = None) -> str:
        """The file's sha256, computed on the pod (hashlib: several times faster than sha256sum). With
        `expected` and `move_to`, the file is also moved into place if, and only if, it matches."""
        script = ("import hashlib,os,sys\nh=hashlib.sha256()\nf=open(sys.argv[1],'rb')\n"
                  "for b in iter(lambda:f.read(1<<20),b''):h.update(b)\nd=h.hexdigest()\nprint(d)\n"
                  "if len(sys.argv)>2 and d==sys.argv[2]:os.replace(sys.argv[1],sys.argv[3])")
        args = [path] + ([expected, move_to] if expected and move_to else [])
        out: list[str] = []
        command = f"{shlex.quote(self.target.python)} -c {shlex.quote(script)} {' '.join(map(shlex.quote, args))}"
        if self.exec(command, on_line=out.append) != 0 or not out or len(out[-1].strip()) != 64:
            raise TransportError(f"cannot hash {path} on the pod: {' '.join(out)[-300:]}",
                                 f"is {self.target.python} the pod's python? (remote.python)")
        return out[-1].strip()

    # -- files ------------------------------------------------------------------------------------

    def _lanes(self, size: int) -> list[paramiko.SFTPClient]:
        """SFTP sessions to move one file on: each its own channel, so each gets its own window from sshd
        (2 MB with OpenSSH, about 40 MB/s on a 50 ms link). Small files take one."""
        wanted = LANES if size >= PARALLEL_FROM else 1
        while len(self._sftp) < wanted:
            self._sftp.append(paramiko.SFTPClient.from_transport(
                self._transport(), window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE))
        return self._sftp[:wanted]

    def put(self, local: Path, remote: str) -> str:
        local, partial = Path(local), remote + ".part"
        size = local.stat().st_size
        try:
            folder = posixpath.dirname(remote)
            if folder not in self._folders:
                self.exec(f"mkdir -p {shlex.quote(folder)}")
                self._folders.add(folder)
            lanes = self._lanes(size)
            lanes[0].open(partial, "wb").close()
            with ThreadPoolExecutor(len(lanes)) as pool:
                sent = [pool.submit(_put_range, lane, local, partial, start, length)
                        for lane, (start, length) in zip(lanes, _ranges(size, len(lanes)))]
                expected = sha256_file(local)  # meanwhile: hashlib lets the senders run
                for future in sent:
                    future.result()
        except RETRYABLE as exc:
            raise TransportError(f"upload of {local.name} to {self.target.describe()} failed: {exc}") from exc
        # One round trip: hash on the pod, moved into place only if it matches.
        check_sha256(f"{remote} on the pod", expected, self.remote_sha256(partial, expected, move_to=remote))
        return expected

    def size(self, remote: str, within: str | None = None) -> int:
        sftp = self._lanes(0)[0]
        for folder in folders_between(within, remote):  # one round trip each: adapter/x costs two in all
            self._lstat(sftp, folder, remote)
        return self._lstat(sftp, remote, remote).st_size

    def _lstat(self, sftp: paramiko.SFTPClient, path: str, remote: str) -> paramiko.SFTPAttributes:
        """lstat, never stat: a symlink is refused, not followed. The last one (path == remote) must be a
        regular file."""
        try:
            info = sftp.lstat(path)
        except RETRYABLE as exc:
            raise TransportError(f"cannot stat {path} on {self.target.describe()}: {exc}") from exc
        if info.st_mode is not None and stat.S_ISLNK(info.st_mode):
            raise symlink_refused(path, remote)
        if path == remote and (info.st_mode is None or not stat.S_ISREG(info.st_mode)):
            raise TransportError(f"{remote} on {self.target.describe()} is not a regular file")
        return info

    def write_private(self, remote: str, data: bytes) -> None:
        try:
            sftp = self._lanes(0)[0]
            try:
                sftp.remove(remote)  # an existing file would keep its mode
            except FileNotFoundError:
                pass
            with sftp.open(remote, "wx") as fh:
                fh.chmod(0o600)  # before the first byte: the file is created with the server's umask
                fh.write(data)
        except RETRYABLE as exc:
            raise TransportError(f"writing {remote} on {self.target.describe()} failed: {exc}") from exc

    def get(self, remote: str, local: Path, sha256: str | None = None, max_bytes: int | None = None) -> str:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(local.name + ".part")
        try:
            size = self.size(remote)
            check_max_bytes(remote, size, max_bytes)
            expected = sha256 or self.remote_sha256(remote)
            lanes = self._lanes(size)
            with open(partial, "wb") as fh:
                fh.truncate(size)
            # Once more right before the lanes open it: a file swapped for a symlink since size() looked (while
            # the pod hashed it, say) is refused, not followed. SFTP has no open-without-following, so a swap
            # within the one round trip between this lstat and the opens is what is left; the sha256 from
            # result.json, checked below, still has to match what comes home.
            self._lstat(lanes[0], remote, remote)
            with ThreadPoolExecutor(len(lanes)) as pool:
                for future in [pool.submit(_get_range, lane, remote, partial, start, length)
                               for lane, (start, length) in zip(lanes, _ranges(size, len(lanes)))]:
                    future.result()
            if max_bytes is not None:  # only `size` bytes were read; one that grew past the cap is refused whole
                check_max_bytes(remote, self.size(remote), max_bytes)
            check_sha256(str(local), expected, sha256_file(partial))
        except RETRYABLE as exc:
            partial.unlink(missing_ok=True)
            raise TransportError(f"download of {remote} from {self.target.describe()} failed: {exc}") from exc
        except TransportError:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(local)
        return expected

    def close(self) -> None:
        for lane in self._sftp:
            try:
                lane.close()
            except Exception:  # already gone with the connection
                pass
        self._sftp = []
        if self.client is not None:
            self.client.close()
            self.client = None


def _ranges(size: int, parts: int) -> list[tuple[int, int]]:
    step = -(-size // parts) if size else 0
    return [(start, min(step, size - start)) for start in range(0, size, step)] if size else [(0, 0)]


def _put_range(sftp: paramiko.SFTPClient, local: Path, remote: str, start: int, length: int) -> None:
    with open(local, "rb") as src, sftp.open(remote, "r+b") as dst:
        dst.set_pipelined(True)  # writes stream out; their acknowledgements are checked at close
        src.seek(start)
        dst.seek(start)
        while length > 0:
            block = src.read(min(1 << 20, length))
            dst.write(block)
            length -= len(block)


def _get_range(sftp: paramiko.SFTPClient, remote: str, local: Path, start: int, length: int) -> None:
    """Reads in batches of READS_IN_FLIGHT requests: paramiko's own prefetch() of a whole big file spends its
    time bookkeeping thousands of outstanding requests (10-20 s for 200 MB here, against 1 s)."""
    with sftp.open(remote, "rb") as src, open(local, "r+b") as dst:
        offset, end = start, start + length
        while offset < end:
            batch = []
            while offset < end and len(batch) < READS_IN_FLIGHT:
                batch.append((offset, min(READ_REQUEST, end - offset)))
                offset += batch[-1][1]
            dst.seek(batch[0][0])
            for block in src.readv(batch):
                dst.write(block)
