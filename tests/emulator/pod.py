"""One emulated pod: its record (what the API shows), its container log, its container (a PID namespace under
the podinit shim, whose PID 1 is the image's entrypoint, which starts a real OpenSSH sshd on 127.0.0.1) and the
TCP proxy that is its public SSH port. The API side is in server.py."""
from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import pwd
import secrets
import select
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from tests import sshd
from tests.emulator.podinit import descendants

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WAIT_S = 30.0  # upper bound for something that should happen at once; never a measured duration
INF = float("inf")

# FAKE: a Docker engine cannot run here, so an image is only a known entrypoint, run as PID 1 of the pod.
IMAGES = {
    # lorapod's own image (remote_image/Dockerfile, CMD start.sh): start.sh itself, which execs sshd.
    "lorapod": REPO / "remote_image" / "start.sh",
    # RunPod's official images: a stand-in for their /start.sh, bash that stays PID 1 (see the script's header).
    "runpod": HERE / "images" / "runpod_start.sh",
    # Any other image (unsloth/unsloth...): nothing here documents its entrypoint, so the harsher reading,
    # sshd as PID 1 (the same script, with ENTRYPOINT_ARGS: it execs sshd at the end).
    "sshd-pid1": HERE / "images" / "runpod_start.sh",
}
ENTRYPOINT_ARGS = {"sshd-pid1": ("--exec-sshd",)}  # arguments, not variables: PID 1's environment is the container's
CONTAINER_SH = HERE / "container.sh"  # the namespace's first process: the pod's own /run and dotfiles
# RunPod's start script's last line before `sleep infinity` (runpod/containers container-template/start.sh):
# a pod without a public key starts no sshd, and is up once this is said.
RUNPOD_READY_LINE = "Start script(s) finished, Pod is ready to use."
RUNPOD_SSHD_EXITED = "runpod-emulator: sshd exited with status"  # the stand-in's own line (emulator-only)


_PREFLIGHT: list[str] = []  # "" once a namespace could be made; else why not


def container_preflight() -> None:
    """Whether this machine can make a pod's namespaces (unshare --pid needs root: CAP_SYS_ADMIN): RuntimeError
    in unshare's words if not, so a test fails at once instead of waiting for a pod that never boots."""
    if not _PREFLIGHT:
        tried = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "true"],
                               capture_output=True, text=True)
        _PREFLIGHT.append("" if tried.returncode == 0 else tried.stderr.strip() or f"status {tried.returncode}")
    if _PREFLIGHT[0]:
        raise RuntimeError(f"an emulated pod is a PID namespace, and `unshare --pid` fails here (it needs root): "
                           f"{_PREFLIGHT[0]}")


# Where RunPod's official images live: its Docker Hub namespace (runpod.md: runpod/pytorch), named short or
# with Docker Hub's registry host.
RUNPOD_REPOSITORIES = ("runpod/", "docker.io/runpod/", "index.docker.io/runpod/", "registry-1.docker.io/runpod/")


def image_kind(image: str, overrides: Optional[dict] = None) -> str:
    """Which entrypoint stands for the image `image`: overrides[image] when given; "lorapod" for a reference
    that names lorapod (docker.io/lorapod/trainer:TAG, docker.io/you/lorapod-trainer@sha256:...); "runpod"
    for one in RunPod's own repositories (runpod/pytorch:..., docker.io/runpod/base:..., any tag or digest);
    "sshd-pid1" for anything else (docker.io/unsloth/unsloth:..., ghcr.io/runpod/x: not RunPod's Hub)."""
    if overrides and image in overrides:
        return overrides[image]
    reference = (image or "").strip().lower()
    if "lorapod" in reference:
        return "lorapod"
    return "runpod" if reference.startswith(RUNPOD_REPOSITORIES) else "sshd-pid1"

# What RunPod answers while a container that needs a newer driver than the host's never starts.
NEVER_READY_LINES = (
    "error starting container: Error response from daemon: failed to create task for container: failed to create "
    "shim task: OCI runtime create failed: runc create failed: unable to start container process: error during "
    "container init: error running hook #0: error running hook: exit status 1, stdout: , stderr: Auto-detected "
    "mode as 'legacy' nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.8, please update "
    "your driver to a newer version, or use an earlier cuda container: unknown",
    "container failed to start: the host's driver supports CUDA 12.4; the image needs CUDA >= 12.8",
)

# What sshd prints while the internet's scanners knock on a public port 22 (runpod.md: "a pod with a public
# port 22 logs scanner connections all day"). The formats are OpenSSH's own, as quoted from real servers in
# crowdsecurity/hub#1168 and fail2ban/fail2ban#1392; the addresses are RFC 5737 documentation ones.
SCANNER_LINES = (
    "Connection closed by {ip} port {port} [preauth]",
    "Invalid user admin from {ip} port {port}",
    "Disconnected from authenticating user root {ip} port {port} [preauth]",
)


def now_iso(wall: Optional[float] = None) -> str:
    moment = datetime.fromtimestamp(time.time() if wall is None else wall, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def random_id(length: int = 14) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(length))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fingerprint(public_key_line: str) -> tuple[str, str]:
    """(type, SHA256:fingerprint) of an OpenSSH public key line: what `ssh-keygen -lf` and paramiko's
    PKey.fingerprint print (base64 of the sha256 of the key blob, no padding)."""
    kind, blob = public_key_line.split()[:2]
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    return kind, "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


# ---------------------------------------------------------------------------------------------- container log

@dataclass(frozen=True)
class LogLine:
    seq: int
    ts: str
    source: str  # "container" (the pod's own output) or "system" (RunPod's lifecycle messages)
    line: str

    @property
    def event_id(self) -> str:
        return f"{self.ts}/{self.seq}"

    def payload(self) -> dict:
        return {"ts": self.ts, "source": self.source, "line": self.line}


class ContainerLog:
    """What GET /v2/pods/{id}/logs serves: lines in arrival order, each with a timestamp and a sequence number."""

    def __init__(self):
        self._lock = threading.Condition()
        self.lines: list[LogLine] = []

    def add(self, line: str, source: str = "container") -> None:
        with self._lock:
            self.lines.append(LogLine(len(self.lines) + 1, now_iso(), source, line.rstrip("\r\n")))
            self._lock.notify_all()

    def text(self, start: int = 0) -> str:
        """The lines from the `start`-th on (0: all), joined."""
        with self._lock:
            return "\n".join(entry.line for entry in self.lines[start:])

    def wait_for(self, text: str, timeout: float = WAIT_S, start: int = 0) -> bool:
        """Whether a line from the `start`-th on contains `text` within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not any(text in entry.line for entry in self.lines[start:]):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    def last_seq(self) -> int:
        with self._lock:
            return len(self.lines)

    def after(self, seq: int, timeout: float) -> list[LogLine]:
        """The lines after the `seq`-th, waiting up to `timeout` seconds for one when there is none yet."""
        with self._lock:
            if len(self.lines) <= seq:
                self._lock.wait(timeout)
            return self.lines[seq:]

    def select(self, *, tail: int = 100, since: Optional[str] = None, last_event_id: Optional[str] = None,
               source: Optional[str] = None) -> list[LogLine]:
        """The lines a logs request gets: after `last_event_id` (an id this log gave, or a timestamp), else from
        `since`, else the last `tail` lines; only `source` ones when given."""
        with self._lock:
            lines = [entry for entry in self.lines if source is None or entry.source == source]
        if last_event_id:
            ids = [entry.event_id for entry in lines]
            if last_event_id in ids:
                return lines[ids.index(last_event_id) + 1:]
            cursor = _parse_ts(last_event_id.split("/")[0])
            return [entry for entry in lines if cursor is None or _parse_ts(entry.ts) > cursor]
        if since:
            cursor = _parse_ts(since)
            return [entry for entry in lines if cursor is None or _parse_ts(entry.ts) >= cursor]
        return lines[-tail:] if tail else []


def _parse_ts(text: str) -> Optional[datetime]:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------- TCP proxy

class _Pair:
    """One proxied connection: a client socket and its upstream (sshd) socket, pumped both ways."""

    def __init__(self, client: socket.socket, upstream: socket.socket, on_close: Callable[["_Pair"], None]):
        self.client, self.upstream = client, upstream
        self.frozen = False  # "hang" cut: bytes are read and dropped, nothing arrives, nothing closes
        self._done = 0
        self._lock = threading.Lock()
        self._on_close = on_close
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def start(self) -> None:
        for src, dst in ((self.client, self.upstream), (self.upstream, self.client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True, name="emulator-proxy-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        clean = True
        while True:
            try:
                data = src.recv(1 << 18)
            except OSError:
                clean = False
                break
            if not data:
                break
            if self.frozen:
                continue
            try:
                dst.sendall(data)
            except OSError:
                clean = False
                break
        if clean and not self.frozen:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        with self._lock:
            self._done += 1
            last = self._done == 2 or not clean
        if last:
            self.close()

    def cut(self) -> None:
        """A dropped connection: the client gets a reset (or an end of stream) at once, and so does sshd."""
        for sock in (self.client, self.upstream):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.close()

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the other pump's recv(), which close() alone does not
            except OSError:
                pass
            sock.close()
        self._on_close(self)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0): the peer sees "connection reset", not an orderly end."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class TcpProxy:
    """The pod's public SSH port: 127.0.0.1:<port> forwarded to the pod's sshd.

    The port is bound from the pod's creation but only listens from `publish(..., accept_after)` on: until
    then a connection is refused (ECONNREFUSED), as it is before a container's sshd is up. A refusal after
    that (refuse(), a restart) resets each new connection instead."""

    def __init__(self):
        self._sock = self._bind(0)
        self.port: int = self._sock.getsockname()[1]
        self._target: Optional[int] = None
        self._accept_after = INF
        self._listening = False
        self._pairs: set[_Pair] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.accepted = 0  # connections forwarded so far
        self.cut_count = 0  # connections cut by cut()

    @staticmethod
    def _bind(port: int) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        return sock

    def publish(self, target_port: int, accept_after: float) -> None:
        """Forward to `target_port`, accepting connections once time.monotonic() >= accept_after (at once when
        that time has come: the port listens before this returns)."""
        with self._lock:
            self._target, self._accept_after = target_port, accept_after
            self._apply()
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._serve, daemon=True, name=f"emulator-proxy-{self.port}")
                self._thread.start()

    def refuse(self, until: float = INF) -> None:
        """Refuse new connections until time.monotonic() >= until (forever by default); live ones stay."""
        with self._lock:
            self._accept_after = until
            self._apply()

    def _apply(self) -> bool:
        """Listens once the time has come; returns whether connections are accepted now. Lock held.

        Before the first listen a connection is refused by the kernel (a bound port that does not listen).
        Once listening, the port keeps listening (its accepted connections hold it), so a later refusal
        resets each new connection at once instead."""
        accepting = time.monotonic() >= self._accept_after
        if accepting and not self._listening and not self._closed.is_set():
            self._sock.listen(64)
            self._listening = True
        return accepting

    def _serve(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                accepting = self._apply()
                sock, listening = self._sock, self._listening
            if not listening:
                self._closed.wait(0.02)
                continue
            try:
                ready, _, _ = select.select([sock], [], [], 0.05)
                if not ready:
                    continue
                client, _ = sock.accept()
            except (OSError, ValueError):
                continue
            with self._lock:
                accepting = self._apply()
            if accepting:
                self._forward(client)
            else:
                _reset(client)

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self._target), timeout=WAIT_S)
            upstream.settimeout(None)
        except OSError:
            _reset(client)
            return
        with self._lock:
            if self._closed.is_set():
                client.close()
                upstream.close()
                return
            self.accepted += 1
            pair = _Pair(client, upstream, self._forget)
            self._pairs.add(pair)
        pair.start()

    def _forget(self, pair: _Pair) -> None:
        with self._lock:
            self._pairs.discard(pair)

    @property
    def live_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def cut(self, mode: str = "reset") -> int:
        """Cuts every live connection; returns how many. mode "reset": both ends see the connection drop at
        once. mode "hang": the connections stay open but carry nothing more (a silent network loss; the
        client notices only through its own timeouts or keepalives)."""
        if mode not in ("reset", "hang"):
            raise ValueError(f"mode must be 'reset' or 'hang', not {mode!r}")
        with self._lock:
            pairs = list(self._pairs)
            self.cut_count += len(pairs)
        for pair in pairs:
            if mode == "hang":
                pair.frozen = True
            else:
                pair.cut()
        return len(pairs)

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            pairs = list(self._pairs)
        for pair in pairs:
            pair.cut()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(WAIT_S)
        self._sock.close()


# ---------------------------------------------------------------------------------------------- the container

class PodMachine:
    """The pod's container on this machine: its own PID and mount namespaces (unshare, under the podinit
    shim) whose PID 1 is the image's entrypoint (IMAGES), holding the container environment. The entrypoint
    starts a real OpenSSH sshd on 127.0.0.1 (key login only); SSH sessions start with sshd's fresh
    environment, never the container's. Output goes to the container log.

    FAKE: no Docker engine can run here, so an image is a known entrypoint and the filesystem is this
    machine's, save the pod's own /run and empty dotfiles (container.sh)."""

    def __init__(self, folder: Path, log: ContainerLog, kind: str = "runpod"):
        if kind not in IMAGES:
            raise ValueError(f"an image kind is one of {', '.join(IMAGES)}, not {kind!r}")
        self.folder = folder
        self.kind = kind
        self.ssh_dir = folder / "ssh"
        self.host_key = self.ssh_dir / "ssh_host_ed25519_key"  # every entrypoint names its keys so
        self.authorized_keys = self.ssh_dir / "authorized_keys"
        self.dotfiles = folder / "dotfiles"
        self.run_dir = folder / "run"  # the pod's /run (container.sh binds it there): kept as its disk is
        self.log = log
        self.sshd_port: Optional[int] = None
        self.init: Optional[subprocess.Popen] = None  # podinit, the shim
        self.failed: Optional[str] = None
        self._generation = 0
        self._lock = threading.Lock()
        self._reader: Optional[threading.Thread] = None

    @property
    def entrypoint(self) -> Path:
        return IMAGES[self.kind]

    @property
    def entrypoint_args(self) -> tuple[str, ...]:
        return ENTRYPOINT_ARGS.get(self.kind, ())

    @property
    def up(self) -> bool:
        return self.sshd_port is not None and self.init is not None and self.init.poll() is None

    def host_key_fingerprint(self) -> tuple[str, str]:
        return fingerprint((self.host_key.parent / (self.host_key.name + ".pub")).read_text())

    def image_env(self, port: int) -> dict[str, str]:
        """What "the image's installation" sets for its entrypoint: where its sshd keeps its files and listens.
        lorapod's start.sh reads these (documented at its top) so it can run against this machine's sshd;
        the stand-in script (runpod, sshd-pid1) reads its own, emulator-only ones."""
        if self.kind == "lorapod":
            return {"LORAPOD_SSH_DIR": str(self.ssh_dir), "LORAPOD_SSH_LISTEN": "127.0.0.1",
                    "LORAPOD_SSH_PORT": str(port), "LORAPOD_AUTHORIZED_KEYS": str(self.authorized_keys),
                    "LORAPOD_PYTHON": sys.executable, "LORAPOD_SSHD": sshd.SSHD}
        return {"EMULATOR_SSH_DIR": str(self.ssh_dir), "EMULATOR_SSH_PORT": str(port), "EMULATOR_SSHD": sshd.SSHD}

    def boot(self, container_env: dict[str, str]) -> None:
        """Starts the container with `container_env` as PID 1's environment; returns once its sshd listens
        (self.up), or once it is up without one (RunPod's images start none without a public key), or failed
        (self.failed says why; the container log has the image's and sshd's own words)."""
        with self._lock:
            generation = self._generation
        # RunPod's start script starts no sshd without a key; lorapod's start.sh and an sshd-pid1 image
        # always try (start.sh fails the boot without one, unless its watchdog runs).
        keys = any(container_env.get(var, "").strip() for var in ("PUBLIC_KEY", "SSH_PUBLIC_KEY"))
        expect_sshd = self.kind != "runpod" or keys
        try:
            self._prepare()
            for _ in range(3):  # a port taken between free_port() and sshd's bind: try another
                port = free_port()
                mark = self.log.last_seq()
                # The image's installation first: the create's env cannot move the pod's sshd.
                if not self._spawn({**container_env, **self.image_env(port)}, generation):
                    return  # stopped while booting
                outcome = self._wait_ready(port, mark, generation, expect_sshd)
                if outcome == "up":
                    return
                if outcome != "address in use":
                    if outcome != "stopped":
                        self.failed = f"sshd did not start ({outcome}): see the container log"
                    return
                with self._lock:
                    init, self.init = self.init, None
                self._stop(init)
            self.failed = "sshd did not start: see the container log"
        except Exception as exc:  # noqa: BLE001 - reported through the pod's log and the emulator's errors
            self.failed = f"boot failed: {exc!r}"
            self.log.add(f"lorapod-emulator: {self.failed}")

    def _wait_ready(self, port: int, mark: int, generation: int, expect_sshd: bool) -> str:
        """"up" once sshd listens on `port` (its "Server listening" line, or a listening socket of the
        container's in /proc/net/tcp: an entrypoint may log elsewhere), or, for a container that starts no
        sshd, once RunPod's start script says it finished. Else why not."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            text = self.log.text(start=mark)
            with self._lock:
                if generation != self._generation:
                    return "stopped"
                init = self.init
                if (f"Server listening on 127.0.0.1 port {port}" in text or self._listening(port)) if expect_sshd \
                        else RUNPOD_READY_LINE in text:
                    self.sshd_port = port
                    return "up"
            if "Address already in use" in text:
                return "address in use"
            if RUNPOD_SSHD_EXITED in text:
                return "sshd exited"
            if init is None or init.poll() is not None:
                return "the container exited"
            time.sleep(0.02)
        return f"nothing listens on port {port} within {WAIT_S:g}s"

    def _listening(self, port: int) -> bool:
        """Whether a process of this container has a socket listening on 127.0.0.1:port. The pod shares this
        machine's network namespace, so the machine's /proc/net/tcp lists it."""
        address = "%08X:%04X" % (struct.unpack("=I", socket.inet_aton("127.0.0.1"))[0], port)
        try:
            rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        except OSError:
            return False
        sockets = {f"socket:[{row[9]}]" for row in rows if len(row) > 9 and row[1] == address and row[3] == "0A"}
        for pid in self.processes() if sockets else ():
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in sockets:
                        return True
            except OSError:
                continue
        return False

    def _prepare(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ssh_dir.mkdir(mode=0o700, exist_ok=True)  # the pod's disk: kept across stop/start and restart
        self.dotfiles.mkdir(mode=0o700, exist_ok=True)
        if not self.run_dir.exists():  # as an image's /run: root's, 0755 (sshd wants /run/sshd under no
            self.run_dir.mkdir()       # group- or world-writable folder); then whatever the pod made of it
            os.chmod(self.run_dir, 0o755)

    def _spawn(self, env: dict[str, str], generation: int) -> bool:
        # unshare's child is PID 1 of new PID and mount namespaces (--mount-proc: `ps` and /proc/1 inside are
        # the pod's); container.sh gives it its own /run and dotfiles, then execs the entrypoint.
        argv = [shutil.which("unshare") or "unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
                "sh", str(CONTAINER_SH), pwd.getpwuid(os.getuid()).pw_dir, str(self.dotfiles), str(self.run_dir),
                "bash", str(self.entrypoint), *self.entrypoint_args]
        spec = json.dumps({"name": self.entrypoint.name, "argv": argv})
        with self._lock:
            if generation != self._generation:
                return False
            self.init = subprocess.Popen(
                [sys.executable, str(HERE / "podinit.py"), spec], env=env, cwd=self.folder,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            self._reader = threading.Thread(target=self._read, args=(self.init,), daemon=True,
                                            name="emulator-container-log")
            self._reader.start()
        return True

    def _read(self, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stdout.readline, b""):
            self.log.add(raw.decode(errors="replace"))
        proc.stdout.close()

    def processes(self) -> list[int]:
        """Pids of every process of the container, as this machine numbers them (podinit first, then unshare
        and the pod's PID 1); empty when it is not running."""
        init = self.init
        if init is None or init.poll() is not None:
            return []
        return [init.pid, *descendants(init.pid)]

    def kill(self) -> None:
        """Kills the container: every process in its namespace, then the shim. Idempotent."""
        with self._lock:
            self._generation += 1  # a boot still under way starts nothing more
            init, self.init, self.sshd_port = self.init, None, None
        self._stop(init)

    def _stop(self, init: Optional[subprocess.Popen]) -> None:
        if init is None:
            return
        if init.poll() is None:
            # podinit kills the container (SIGKILL to unshare and the namespace's init: the kernel kills the
            # rest), reaps it, and exits. Its SIGTERM handler is set before it starts the container, so a
            # SIGTERM that comes earlier finds nothing to leave behind.
            init.terminate()
            try:
                init.wait(WAIT_S)
            except subprocess.TimeoutExpired:  # a wedged shim: do its work from here
                for _ in range(500):
                    pids = descendants(init.pid)
                    if not pids:
                        break
                    for pid in pids:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    time.sleep(0.01)
                init.kill()
        init.wait(WAIT_S)
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(WAIT_S)


# ---------------------------------------------------------------------------------------------- the pod

ACTIONS = {
    "PROVISIONING": ["stop", "terminate"],
    "STARTING": ["stop", "terminate"],
    "RUNNING": ["stop", "restart", "terminate"],
    "EXITED": ["start", "terminate"],
    "ERROR": ["start", "terminate"],
    "TERMINATED": [],
}
BILLED = ("PROVISIONING", "STARTING", "RUNNING")


@dataclass
class EmulatedPod:
    """A pod as the emulator holds it. `request` is the create body exactly as the client sent it."""

    id: str
    key: str  # the pod-scoped API key (RUNPOD_API_KEY inside the pod)
    request: dict
    folder: Path
    cost_per_hr: float
    data_center: str
    cuda_version: str
    provisioning_s: float
    starting_s: float
    ports_after_running_s: float
    never_ready: bool = False
    refuse_ssh_for_s: float = 0.0
    public_ip: bool = True  # False: a community host that never publishes a public IP (faults.no_public_ip)
    image_kind: str = "runpod"  # which entrypoint stands for the image (IMAGES, image_kind())
    scanner_interval_s: Optional[float] = 1.0  # a line in sshd's log this often while port 22 is public
    status: str = "PROVISIONING"
    ready: bool = False  # runtime and ssh.direct published
    failure_reported: bool = False
    created_at: str = field(default_factory=now_iso)
    started_at: Optional[str] = None
    terminated: threading.Event = field(default_factory=threading.Event)
    log: ContainerLog = field(default_factory=ContainerLog)
    proxy: Optional[TcpProxy] = None
    machine: Optional[PodMachine] = None
    _phase_t: float = field(default_factory=time.monotonic)
    _running_t: Optional[float] = None
    _billed_s: float = 0.0
    _bill_t: Optional[float] = field(default_factory=time.monotonic)
    # Wall-clock [start, end) spans in a billed status (end None: still billing), for GET /v2/billing/pods
    billed_spans: list = field(default_factory=lambda: [[time.time(), None]])
    _udp: Optional[socket.socket] = None
    _scanned_t: float = 0.0

    # ---- what the client sent
    @property
    def name(self) -> str:
        return self.request["name"]

    @property
    def image(self) -> Optional[str]:
        return self.request.get("image")

    @property
    def env(self) -> dict:
        return dict(self.request.get("env") or {})

    @property
    def gpu(self) -> dict:
        return dict(self.request.get("gpu") or {})

    @property
    def cloud(self) -> str:
        return self.request.get("cloud", "SECURE")

    # ---- what the pod's processes see
    def container_env(self) -> dict[str, str]:
        """The container's environment: PID 1's, and only PID 1's (runpod.md: "These are the CONTAINER's
        environment: PID 1 has them. A process started through an SSH session gets a fresh environment").
        The create's `env`, RunPod's variables over it (runpod.md, "Inside a pod"), PATH and LANG from this
        machine (the image's would be the image's), and HOME, which Docker sets from the container user's
        passwd entry (Docker's run reference: "HOME: Set based on the value of USER")."""
        env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
        env["HOME"] = pwd.getpwuid(os.getuid()).pw_dir
        env.update(self.env)
        env.update({
            "RUNPOD_POD_ID": self.id,
            "RUNPOD_API_KEY": self.key,
            "RUNPOD_PUBLIC_IP": "127.0.0.1",
            "RUNPOD_TCP_PORT_22": str(self.proxy.port if self.proxy else ""),
            "RUNPOD_GPU_COUNT": str(self.gpu.get("count", 1)),
            "RUNPOD_DC_ID": self.data_center,
            "CUDA_VERSION": self.cuda_version,
        })
        return env

    # ---- lifecycle (the emulator calls these with its lock held)
    def billed_s(self) -> float:
        """Seconds this pod has billed (PROVISIONING, STARTING and RUNNING count)."""
        extra = time.monotonic() - self._bill_t if self._bill_t is not None else 0.0
        return self._billed_s + extra

    def _set_status(self, status: str) -> None:
        now = time.monotonic()
        if self._bill_t is not None and status not in BILLED:
            self._billed_s += now - self._bill_t
            self._bill_t = None
            self.billed_spans[-1][1] = time.time()
        elif self._bill_t is None and status in BILLED:
            self._bill_t = now
            self.billed_spans.append([time.time(), None])
        self.status, self._phase_t = status, now

    def tick(self) -> Optional[Callable[[], None]]:
        """Moves the pod along its lifecycle; returns a boot to run outside the lock, if one is due."""
        now = time.monotonic()
        if self.status == "PROVISIONING" and now - self._phase_t >= self.provisioning_s:
            return self.enter_starting()
        if self.status == "STARTING" and now - self._phase_t >= self.starting_s:
            self._set_status("RUNNING")
            self._running_t, self.started_at = now, now_iso()
        elif self.status == "RUNNING" and not self.ready and not self.never_ready \
                and now - self._phase_t >= self.ports_after_running_s and self.machine is not None \
                and self.machine.up:
            self.ready = True
            if self.public_ip:
                self.proxy.publish(self.machine.sshd_port, time.monotonic() + self.refuse_ssh_for_s)
        # Scanners find a public port 22 only: a host without a public IP logs none.
        if self.ready and self.public_ip and self.scanner_interval_s and \
                now - self._scanned_t >= self.scanner_interval_s:
            self._scanned_t = now
            ip, port = f"{secrets.choice(('192.0.2', '198.51.100', '203.0.113'))}.{secrets.randbelow(254) + 1}", \
                secrets.randbelow(40000) + 20000
            self.log.add(secrets.choice(SCANNER_LINES).format(ip=ip, port=port))
        return None

    def enter_starting(self) -> Optional[Callable[[], None]]:
        self._set_status("STARTING")
        self.ready = False
        if self.proxy is None:
            self.proxy = TcpProxy()
        if self._udp is None:
            self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._udp.bind(("127.0.0.1", 0))
        self.log.add(f"create container {self.image}", "system")
        if self.never_ready:
            for line in NEVER_READY_LINES:
                self.log.add(line, "system")
            return None
        self.log.add("start container", "system")
        if self.machine is None:
            self.machine = PodMachine(self.folder, self.log, self.image_kind)
        machine, env = self.machine, self.container_env()
        return lambda: machine.boot(env)

    def stop(self) -> None:
        self._set_status("EXITED")
        self.ready = False
        self._running_t = None
        if self.proxy is not None:  # a stopped pod loses its public port; a started one gets a new one
            self.proxy.close()
            self.proxy = None
        self.log.add("stop container", "system")

    def restart(self) -> Optional[Callable[[], None]]:
        self.ready = False
        self._running_t = None
        if self.machine is not None:
            self.machine.sshd_port = None  # the old sshd is about to die: not up until the new one listens
        if self.proxy is not None:
            self.proxy.refuse()
        self.log.add("restart container", "system")
        return self.enter_starting()

    def terminate(self) -> None:
        """TERMINATED from now on; the public port closes at once. The processes die in kill_processes()."""
        self._set_status("TERMINATED")
        self.ready = False
        self.terminated.set()
        if self.proxy is not None:
            self.proxy.close()
        if self._udp is not None:
            self._udp.close()
        self.log.add("remove container", "system")

    def kill_processes(self) -> None:
        if self.machine is not None:
            self.machine.kill()

    # ---- what the API shows
    def to_json(self) -> dict:
        gpu = self.gpu
        direct = None
        runtime = None
        if self.ready and self.status == "RUNNING":
            user = getpass.getuser()
            ports = []
            if "22/tcp" in (self.request.get("ports") or []):
                # A host without a public IP (issue 9: "a community host may never publish a public TCP 22";
                # RunPod's SSH docs: "not all Pods support the full public IP method"): PodRuntimePort.ip is
                # nullable in the document, and the harsher reading keeps the port number but no address.
                ip = "127.0.0.1" if self.public_ip else None
                # The recorded API lists a udp mapping of 22 first: a client must pick tcp, not the first.
                ports = [
                    {"private": 22, "public": self._udp.getsockname()[1], "type": "udp", "ip": ip},
                    {"private": 22, "public": self.proxy.port, "type": "tcp", "ip": ip},
                ]
                if self.public_ip:
                    direct = {"host": "127.0.0.1", "port": self.proxy.port, "username": user,
                              "command": f"ssh {user}@127.0.0.1 -p {self.proxy.port}"}
            runtime = {
                "uptime": int(time.monotonic() - (self._running_t or time.monotonic())),
                "gpus": [{"util": 0, "memoryUtil": 0} for _ in range(int(gpu.get("count", 1)))],
                "cpu": {"util": 0},
                "memory": {"util": 0},
                "ports": ports,
            }
        return {
            "id": self.id,
            "name": self.name,
            "image": self.image or "",
            "args": self.request.get("args", ""),
            "disk": self.request.get("disk", 50),
            "ports": list(self.request.get("ports") or []),
            "env": self.env,
            "registry": self.request.get("registry"),
            "status": self.status,
            "actions": list(ACTIONS[self.status]),
            "mounts": dict(self.request.get("mounts") or {}),
            "gpu": {"id": gpu["id"], "count": int(gpu.get("count", 1))},
            "cloud": self.cloud,
            "dataCenterId": self.data_center,
            "cudaVersion": self.cuda_version,
            "ssh": {"proxy": None, "direct": direct},
            "template": None,
            "cost": self.cost_per_hr if self.status in BILLED else 0.0,
            "locked": False,
            "globalNetworking": {"enabled": False},
            "runtime": runtime,
            "createdAt": self.created_at,
            "startedAt": self.started_at,
        }
