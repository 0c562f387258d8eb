"""The host keys a pod's start script names in its container log, as `<type> SHA256:<fp>` (what PinHostKey checks).

Two formats:
  * lorapod's start.sh: `lorapod-host-key: ssh-ed25519 SHA256:...`
  * RunPod's official images (runpod/containers container-template/start.sh, setup_ssh: "SSH host keys:", then
    `ssh-keygen -lf` of every /etc/ssh/*.pub): `256 SHA256:... root@host (ED25519)`. The key type is the
    bracketed name; an ECDSA key's curve is its size.
Both are matched as whole lines only: sshd's own lines (a scanner's user name included) start otherwise.
"""
from __future__ import annotations

import re

LORAPOD_LINE = re.compile(r"^lorapod-host-key: (\S+) (SHA256:[A-Za-z0-9+/]+)$")
KEYGEN_LINE = re.compile(r"^(\d+) (SHA256:[A-Za-z0-9+/]+) .*\((ED25519|ECDSA|RSA|DSA)\)$")
KEYGEN_TYPES = {"ED25519": "ssh-ed25519", "RSA": "ssh-rsa", "DSA": "ssh-dss"}
ECDSA_CURVES = {"256": "ecdsa-sha2-nistp256", "384": "ecdsa-sha2-nistp384", "521": "ecdsa-sha2-nistp521"}


def announced(lines: list[str]) -> list[str]:
    """Every host key the lines name, sorted, each once."""
    found = set()
    for raw in lines:
        line = raw.strip()
        ours = LORAPOD_LINE.match(line)
        if ours:
            found.add(" ".join(ours.groups()))
            continue
        keygen = KEYGEN_LINE.match(line)
        if keygen:
            bits, fingerprint, kind = keygen.groups()
            name = ECDSA_CURVES.get(bits) if kind == "ECDSA" else KEYGEN_TYPES[kind]
            if name:
                found.add(f"{name} {fingerprint}")
    return sorted(found)
