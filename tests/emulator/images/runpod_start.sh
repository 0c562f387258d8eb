#!/bin/bash
# FAKE: RunPod's official images (runpod/pytorch, runpod/base; also what the emulator runs for any image whose
# reference does not name lorapod). No Docker engine can run here, so an image is only its entrypoint: this is
# a stand-in for their /start.sh, which RunPod runs as PID 1 of the container.
#
# What it copies, from runpod/containers container-template/start.sh (commit 6990d37, 2026-07: `setup_ssh`,
# then `sleep infinity`) and shared/reference/runpod.md ("RunPod's official images start sshd from PUBLIC_KEY
# and keep the container's variables in PID 1 (a shell start script)"):
#   - PID 1 is this bash script, and it stays (sleep infinity): /proc/1/environ keeps the container's variables.
#   - Only when a public key is set: "Setting up SSH...", the key appended to authorized_keys, host keys
#     generated where missing, sshd started in the background. Without a key there is no sshd at all.
#   - `set -e`: a config sshd rejects ends the script, as the failing `service ssh start` does there.
#   - Its lines "Pod Started" and "Start script(s) finished, Pod is ready to use.".
# What it leaves out, each time the harsher reading for a client:
#   - The fingerprints RunPod's script prints (`ssh-keygen -lf` output after "SSH host keys:"): nothing here
#     names a host key, so a client cannot pin one from the log.
#   - export_env_vars (the variables written to /etc/rp_environment, sourced from ~/.bashrc): SSH sessions see
#     none of the container's variables, not even interactive ones.
#   - nginx, Jupyter, /pre_start.sh and /post_start.sh; RSA and DSA host keys (RSA takes seconds to make).
# Also SSH_PUBLIC_KEY, next to PUBLIC_KEY (runpod.md: "SSH_PUBLIC_KEY is the documented per-pod override").
#
# Emulator-only, named as such (/etc/ssh and ~/.ssh are this machine's, and port 22 is not ours):
#   EMULATOR_SSH_DIR   host keys, authorized_keys and sshd_config
#   EMULATOR_SSH_PORT  sshd listens on 127.0.0.1:<this>, not 0.0.0.0:22
#   EMULATOR_SSHD      the sshd binary
# and sshd runs as `sshd -D -e` in a background job, so that its log is in the container log (RunPod's runs
# as a daemon logging to syslog), followed by "runpod-emulator: sshd exited with status N" when it dies, so that
# the emulator ends a failed boot at once in sshd's words.
set -e

echo "Pod Started"

keys="$(printf '%s\n%s\n' "${PUBLIC_KEY:-}" "${SSH_PUBLIC_KEY:-}" | sed -e 's/\r$//' -e '/^[[:space:]]*$/d')"
if [[ -n "$keys" ]]; then
    echo "Setting up SSH..."
    ssh_dir="${EMULATOR_SSH_DIR:?}"
    sshd="${EMULATOR_SSHD:-/usr/sbin/sshd}"
    mkdir -p "$ssh_dir"
    printf '%s\n' "$keys" >>"$ssh_dir/authorized_keys"
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
    { "$sshd" -D -e -f "$config" || echo "runpod-emulator: sshd exited with status $?"; } &
fi

echo "Start script(s) finished, Pod is ready to use."
sleep infinity &
wait
