#!/usr/bin/env python3
"""SFTP through lorapod's SSH transport against OpenSSH's scp (and the original trainer's base64-over-ssh
pipe), to and from the same loopback sshd: directly, and through a TCP proxy that adds 50 ms round trip.

    python bench/bench_transfer.py [--mb 200] [--repeat 3]

Target: our put and get >= 90% of scp's throughput on both links. Our numbers include the sha256 check on
both ends (that is what a transfer through the transport costs); scp's do not.
"""
from __future__ import annotations

import argparse
import getpass
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.hashing import sha256_file  # noqa: E402
from engine.sshkeys import run_keypair  # noqa: E402
from engine.transport.ssh import SshTarget, SshTransport  # noqa: E402
from tests.emulator.pod import ContainerLog, PodMachine  # noqa: E402  (a real sshd, as the tests use)


class DelayProxy:
    """TCP proxy adding `delay_s` each way: latency without a bandwidth cap, like a long fat link."""

    def __init__(self, upstream_port: int, delay_s: float):
        self.upstream, self.delay = upstream_port, delay_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.sock.accept()
            server = socket.create_connection(("127.0.0.1", self.upstream))
            for a, b in ((client, server), (server, client)):
                self._pipe(a, b)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        import queue

        q: queue.Queue = queue.Queue()

        def read() -> None:
            while True:
                data = src.recv(1 << 20)
                q.put((time.monotonic() + self.delay, data))
                if not data:
                    return

        def write() -> None:
            while True:
                due, data = q.get()
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lorapod-bench-", dir=Path.home()))  # sshd's StrictModes
    work = Path(tempfile.mkdtemp(prefix="lorapod-bench-data-"))
    key, public = run_keypair(work / "key", "bench")
    machine = PodMachine(home / "machine", ContainerLog(), "runpod")  # RunPod's official image, stand-in
    machine.boot({"PATH": os.environ["PATH"], "PUBLIC_KEY": public})
    assert machine.up, machine.failed
    src = work / "payload.bin"
    with open(src, "wb") as fh:
        for _ in range(args.mb):
            fh.write(os.urandom(1 << 20))
    user = getpass.getuser()
    digest = sha256_file(src)
    proxy = DelayProxy(machine.sshd_port, 0.025)
    known = work / "known_hosts"
    ssh_opts = ["-i", str(key), "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=accept-new",
                "-o", "BatchMode=yes"]
    remote_dir = work / "remote"
    remote_dir.mkdir()
    rows, checks = [], {}
    try:
        for link, port in (("loopback", machine.sshd_port), ("+50 ms RTT", proxy.port)):
            transport = SshTransport(SshTarget("127.0.0.1", port, user, key, work / f"kh-{port}", python=sys.executable))
            transport.open(30)
            scp = ["scp", "-q", "-P", str(port), *ssh_opts]
            up, down = f"{user}@127.0.0.1:{remote_dir}/up.bin", work / "down.bin"
            cases = {
                ("upload", "scp"): lambda: subprocess.run([*scp, str(src), up], check=True),
                ("upload", "lorapod put (sftp + sha256)"): lambda: transport.put(src, str(remote_dir / "put.bin")),
                ("upload", "base64 | ssh (original)"): lambda: subprocess.run(
                    f"base64 -w0 {src} | ssh -p {port} {' '.join(ssh_opts)} {user}@127.0.0.1 "
                    f"'base64 -d > {remote_dir}/b64.bin'", shell=True, check=True),
                ("download", "scp"): lambda: subprocess.run([*scp, up, str(down)], check=True),
                # As fetch does it: the expected hash comes from the pod's result.json.
                ("download", "lorapod get (sftp + sha256)"): lambda: transport.get(
                    str(remote_dir / "put.bin"), work / "get.bin", sha256=digest),
                ("download", "ssh cat | base64 (original)"): lambda: subprocess.run(
                    f"ssh -p {port} {' '.join(ssh_opts)} {user}@127.0.0.1 'base64 -w0 {remote_dir}/up.bin' "
                    f"| base64 -d > {work}/b64-down.bin", shell=True, check=True),
            }
            results = {}
            for name, fn in cases.items():
                results[name] = statistics.median(timed(fn) for _ in range(args.repeat))
            checks[link] = (statistics.median(timed(lambda: sha256_file(src)) for _ in range(args.repeat)),
                            statistics.median(timed(lambda: transport.remote_sha256(str(remote_dir / "put.bin")))
                                              for _ in range(args.repeat)))
            transport.close()
            for (direction, method), seconds in results.items():
                base = results[(direction, "scp")]
                rows.append((link, direction, method, seconds, args.mb / seconds, 100 * base / seconds))
        print(f"{args.mb} MB of random bytes, median of {args.repeat}; sshd and client share this machine's CPUs")
        print(f"{'link':<11} {'direction':<9} {'method':<30} {'s':>7} {'MB/s':>8} {'% of scp':>9}")
        for link, direction, method, s, mbps, pct in rows:
            flag = "" if "lorapod" not in method else ("  ok" if pct >= 90 else "  below the 90% target")
            print(f"{link:<11} {direction:<9} {method:<30} {s:>7.2f} {mbps:>8.1f} {pct:>8.0f}%{flag}")
        for link, (here, there) in checks.items():
            print(f"sha256 checks on {link}: {here:.2f} s here (put: overlapped with sending; get: after), "
                  f"{there:.2f} s on the pod (put only)")
    finally:
        machine.kill()
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
