#!/usr/bin/env bash
# The pod's entrypoint (CMD of remote_image/Dockerfile): starts the deadline watchdog, installs the SSH
# public keys, makes sure the pod has its own host keys, prints their fingerprints, and becomes sshd.
#
# Host key fingerprints go to stdout, the container log, one line per key, so a client can pin the host key
# from the pod's logs before it first connects. The line format is a contract:
#
#   lorapod-host-key: <key type> <SHA256 fingerprint>
#   e.g. lorapod-host-key: ssh-ed25519 SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU
#
# <key type> is the public key's algorithm name as the SSH protocol spells it (ssh-ed25519,
# ecdsa-sha2-nistp256, ssh-rsa) and the fingerprint is OpenSSH's SHA256 form (paramiko's PKey.fingerprint).
# A log collector may prefix the line, so match it anywhere:
#   lorapod-host-key: (\S+) (SHA256:[A-Za-z0-9+/]+)
#
# Environment:
#   SSH_PUBLIC_KEY, PUBLIC_KEY  OpenSSH public keys allowed to log in, one per line (RunPod fills PUBLIC_KEY
#                               with the account's keys); both are used. Without any, sshd is not started:
#                               password login is disabled, so nobody could log in.
#   RUNPOD_POD_ID, RUNPOD_API_KEY
#                               set by RunPod; saved first to $LORAPOD_WATCHDOG_DIR/credentials (root only),
#                               because once sshd is PID 1 its process title overwrites /proc/1/environ and
#                               a watchdog started over SSH could find them nowhere else
#   LORAPOD_MAX_RUNTIME_S, LORAPOD_HEARTBEAT_FILE
#                               either starts watchdog.py (see `watchdog.py --help` for all it reads)
# Paths, overridable so tests can run this against the machine's own sshd:
#   LORAPOD_SSHD                sshd binary (default /usr/sbin/sshd)
#   LORAPOD_SSH_DIR             host keys and the generated lorapod_sshd_config (default /etc/ssh)
#   LORAPOD_SSH_LISTEN          address to listen on (default 0.0.0.0)
#   LORAPOD_SSH_PORT            port (default 22)
#   LORAPOD_AUTHORIZED_KEYS     authorized_keys file (default $HOME/.ssh/authorized_keys)
#   LORAPOD_PYTHON              interpreter for the watchdog (default python3)
#   LORAPOD_WATCHDOG_DIR        the saved credentials and the watchdog's files (default /run/lorapod, as
#                               watchdog.py's)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sshd="${LORAPOD_SSHD:-/usr/sbin/sshd}"
ssh_dir="${LORAPOD_SSH_DIR:-/etc/ssh}"
listen="${LORAPOD_SSH_LISTEN:-0.0.0.0}"
port="${LORAPOD_SSH_PORT:-22}"
authorized_keys="${LORAPOD_AUTHORIZED_KEYS:-${HOME:-/root}/.ssh/authorized_keys}"
python="${LORAPOD_PYTHON:-python3}"

state_dir="${LORAPOD_WATCHDOG_DIR:-/run/lorapod}"

say() { echo "lorapod: $*"; }
fail() { echo "lorapod: $*" >&2; }

# Before anything else, and never with the key on a command line or in the log. A failure here must not stop
# the boot: the watchdog started below has the credentials in its own environment.
if [[ -n "${RUNPOD_POD_ID:-}" && -n "${RUNPOD_API_KEY:-}" ]]; then
    if (
        umask 077
        mkdir -p "$state_dir"
        chmod 700 "$state_dir"
        printf 'RUNPOD_POD_ID=%s\nRUNPOD_API_KEY=%s\n' "$RUNPOD_POD_ID" "$RUNPOD_API_KEY" >"$state_dir/credentials.tmp"
        mv -f "$state_dir/credentials.tmp" "$state_dir/credentials"
    ); then
        say "pod id and pod key saved for the watchdog in $state_dir/credentials (root only)"
    else
        fail "could not save the pod id and key in $state_dir/credentials: a watchdog started over SSH will" \
            "look in /proc/1/environ, which sshd overwrites; the boot watchdog has them"
    fi
else
    say "no RUNPOD_POD_ID and RUNPOD_API_KEY: not on RunPod, no credentials saved"
fi
# A restarted container keeps its /run: the last boot's watchdog status files would read as this one's.
rm -f "$state_dir"/status-*.json 2>/dev/null || true

# First, so that a pod which cannot start sshd still deletes itself at its deadline.
watchdog_pid=""
if [[ -n "${LORAPOD_MAX_RUNTIME_S:-}${LORAPOD_HEARTBEAT_FILE:-}" ]]; then
    "$python" "$here/watchdog.py" &
    watchdog_pid=$!
else
    say "no LORAPOD_MAX_RUNTIME_S or LORAPOD_HEARTBEAT_FILE: no watchdog from boot"
fi

# sshd is not started, but a running watchdog keeps the container up until it deletes the pod: a container
# that exits is restarted by RunPod, and each restart would bill on.
refuse() {
    fail "refusing to start sshd: $*"
    if [[ -n "$watchdog_pid" ]]; then
        say "the watchdog (pid $watchdog_pid) stays up to delete this pod at its deadline"
        wait "$watchdog_pid" || true
    fi
    exit 1
}

# One key per line, blank lines and Windows line ends dropped, each key once.
keys="$(printf '%s\n%s\n' "${SSH_PUBLIC_KEY:-}" "${PUBLIC_KEY:-}" |
    sed -e 's/\r$//' -e '/^[[:space:]]*$/d' | awk '!seen[$0]++')"
if [[ -z "$keys" ]]; then
    refuse "neither SSH_PUBLIC_KEY nor PUBLIC_KEY is set, and password login is disabled, so nobody could" \
        "log in. Set one of them to an OpenSSH public key (ssh-ed25519 AAAA... you@host)."
fi
while IFS= read -r key; do
    if ! ssh-keygen -l -f - <<<"$key" >/dev/null 2>&1; then
        refuse "not an OpenSSH public key in SSH_PUBLIC_KEY/PUBLIC_KEY: '${key:0:40}...'"
    fi
done <<<"$keys"

# Keys and the config are private to their owner; what runs in SSH sessions later gets the usual umask back.
session_umask="$(umask)"
umask 077
mkdir -p "$(dirname "$authorized_keys")"
chmod 700 "$(dirname "$authorized_keys")"
printf '%s\n' "$keys" >"$authorized_keys"
chmod 600 "$authorized_keys"
say "$(wc -l <"$authorized_keys") public key(s) in $authorized_keys"

mkdir -p "$ssh_dir"
host_keys=()
for type in ed25519 ecdsa rsa; do
    key_file="$ssh_dir/ssh_host_${type}_key"
    if [[ ! -s "$key_file" ]]; then
        rm -f "$key_file" "$key_file.pub"
        ssh-keygen -q -t "$type" -N '' -C "lorapod-pod" -f "$key_file"
    fi
    host_keys+=("$key_file")
    read -r algorithm _ <"$key_file.pub"
    fingerprint="$(ssh-keygen -l -E sha256 -f "$key_file.pub" | cut -d' ' -f2)"
    echo "lorapod-host-key: $algorithm $fingerprint"
done

config="$ssh_dir/lorapod_sshd_config"
{
    echo "Port $port"
    echo "ListenAddress $listen"
    printf 'HostKey %s\n' "${host_keys[@]}"
    echo "AuthorizedKeysFile $authorized_keys"
    echo "PubkeyAuthentication yes"
    echo "PasswordAuthentication no"
    echo "KbdInteractiveAuthentication no"
    echo "PermitEmptyPasswords no"
    echo "PermitRootLogin prohibit-password"
    echo "StrictModes yes"
    # No PAM: containers lack a login session stack, and keys are the only way in.
    echo "UsePAM no"
    echo "PrintMotd no"
    echo "PidFile $ssh_dir/lorapod_sshd.pid"
    echo "Subsystem sftp internal-sftp"
} >"$config"

if [[ "$(id -u)" == 0 ]]; then
    mkdir -p /run/sshd  # sshd's privilege separation directory
fi
if ! errors="$("$sshd" -t -f "$config" 2>&1)"; then
    refuse "$sshd rejects $config: $errors"
fi
say "sshd on $listen:$port, key login only"
umask "$session_umask"
exec "$sshd" -D -e -f "$config"
