#!/bin/bash
# FAKE: two kinds of image the emulator cannot run for real (no Docker engine here: an image is only its
# entrypoint), both from this one script:
#
#   bash runpod_start.sh               RunPod's official images (runpod/pytorch, runpod/base): a stand-in for
#                                      their /start.sh, which RunPod runs as PID 1 of the container.
#   bash runpod_start.sh --exec-sshd   any other image whose entrypoint nothing here documents (unsloth/unsloth,
#                                      x/y:z): its sshd is PID 1 (the harsher reading, below).
#
# RunPod's official images. What it copies, from runpod/containers container-template/start.sh (commit
# 6990d37, 2026-07: `setup_ssh`, then `sleep infinity`) and shared/reference/runpod.md ("RunPod's official
# images start sshd from PUBLIC_KEY and keep the container's variables in PID 1 (a shell start script)"):
#   - PID 1 is this bash script, and it stays (sleep infinity): /proc/1/environ keeps the container's variables.
#   - Only when a public key is set: "Setting up SSH...", the key appended to authorized_keys, host keys
#     generated where missing, sshd started in the background. Without a key there is no sshd at all.
#   - `set -e`: a config sshd rejects ends the script, as the failing `service ssh start` does there.
#   - Its lines "Pod Started" and "Start script(s) finished, Pod is ready to use.".
#   - After sshd starts, "SSH host keys:" and, for each host key, "Key: <file>" and its `ssh-keygen -lf` line
#     (`256 SHA256:... root@host (ED25519)`), so a client can pin the keys from the log.
# What it leaves out, each time the harsher reading for a client:
#   - The "<TYPE> key fingerprint:" lines it prints while generating a missing key (the same fingerprints).
#   - export_env_vars (the variables written to /etc/rp_environment, sourced from ~/.bashrc): SSH sessions see
#     none of the container's variables, not even interactive ones.
#   - nginx, Jupyter, /pre_start.sh and /post_start.sh; RSA and DSA host keys (RSA takes seconds to make).
# Also SSH_PUBLIC_KEY, next to PUBLIC_KEY (runpod.md: "SSH_PUBLIC_KEY is the documented per-pod override").
#
# --exec-sshd: runpod.md says the above of RunPod's own images only; of Unsloth's it says just that it "reads
# SSH_KEY, then PUBLIC_KEY", and of other images nothing. So the harsher reading for all of them:
#   - sshd is PID 1 (exec'd at the end), so its process title overwrites what /proc/1/environ shows
#     (runpod.md, reproduced with OpenSSH 9.2): the container's variables are out of reach from a session.
#   - The key: the first of SSH_KEY, PUBLIC_KEY, SSH_PUBLIC_KEY that is set, and only it ("SSH_KEY, then
#     PUBLIC_KEY" read as a fallback, not a union: a SSH_KEY of the user's own shadows lorapod's PUBLIC_KEY).
#   - sshd starts with or without a key (with none, it lets nobody in); none of RunPod's lines, no host key
#     named in the log.
#
# Emulator-only, named as such (/etc/ssh and ~/.ssh are this machine's, and port 22 is not ours):
#   EMULATOR_SSH_DIR   host keys, authorized_keys and sshd_config
#   EMULATOR_SSH_PORT  sshd listens on 127.0.0.1:<this>, not 0.0.0.0:22
#   EMULATOR_SSHD      the sshd binary
#   --exec-sshd        the argument above
# and, for RunPod's images, sshd runs as `sshd -D -e` in a background job, so that its log is in the container
# log (RunPod's runs as a daemon logging to syslog), followed by "runpod-emulator: sshd exited with status N"
# when it dies, so that the emulator ends a failed boot at once in sshd's words. With --exec-sshd, sshd's death
# is PID 1's: the container exits (podinit says so).
set -e

exec_sshd=false
if [[ "${1:-}" == --exec-sshd ]]; then
    exec_sshd=true
fi

if $exec_sshd; then
    keys=""
    for var in SSH_KEY PUBLIC_KEY SSH_PUBLIC_KEY; do
        keys="$(printf '%s\n' "${!var:-}" | sed -e 's/\r$//' -e '/^[[:space:]]*$/d')"
        if [[ -n "$keys" ]]; then
            break
        fi
    done
else
    echo "Pod Started"
    keys="$(printf '%s\n%s\n' "${PUBLIC_KEY:-}" "${SSH_PUBLIC_KEY:-}" | sed -e 's/\r$//' -e '/^[[:space:]]*$/d')"
fi
if [[ -n "$keys" ]] || $exec_sshd; then
    $exec_sshd || echo "Setting up SSH..."
    ssh_dir="${EMULATOR_SSH_DIR:?}"
    sshd="${EMULATOR_SSHD:-/usr/sbin/sshd}"
    mkdir -p "$ssh_dir"
    if [[ -n "$keys" ]]; then
        printf '%s\n' "$keys" >>"$ssh_dir/authorized_keys"
    else
        touch "$ssh_dir/authorized_keys"
    fi
    chmod 700 -R "$ssh_dir"
    host_keys=()
    for type in ed25519 ecdsa; do
        key_file="$ssh_dir/ssh_host_${type}_key"
        if [[ ! -f "$key_file" ]]; then
            ssh-keygen -t "$type" -f "$key_file" -q -N ''
        fi
        host_keys+=("$key_file")
    done
    config="$ssh_dir/sshd_config"
    {
        echo "Port ${EMULATOR_SSH_PORT:?}"
        echo "ListenAddress 127.0.0.1"
        printf 'HostKey %s\n' "${host_keys[@]}"
        echo "AuthorizedKeysFile $ssh_dir/authorized_keys"
        echo "PubkeyAuthentication yes"
        echo "PasswordAuthentication no"
        echo "KbdInteractiveAuthentication no"
        echo "PermitRootLogin prohibit-password"
        echo "UsePAM no"
        echo "PrintMotd no"
        echo "Subsystem sftp internal-sftp"
    } >"$config"
    mkdir -p /run/sshd  # what Debian's ssh init script does first (check_privsep_dir): /run is the pod's own
    "$sshd" -t -f "$config"
    if $exec_sshd; then
        exec "$sshd" -D -e -f "$config"
    fi
    { "$sshd" -D -e -f "$config" || echo "runpod-emulator: sshd exited with status $?"; } &
    # RunPod's setup_ssh, after `service ssh start`: every host key's fingerprint, as ssh-keygen -lf prints it.
    echo "SSH host keys:"
    for key in "$ssh_dir"/*.pub; do
        echo "Key: $key"
        ssh-keygen -lf "$key"
    done
fi

echo "Start script(s) finished, Pod is ready to use."
sleep infinity &
wait
