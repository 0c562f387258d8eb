#!/bin/sh
# The first process of an emulated pod's own PID and mount namespaces (PodMachine starts it with
# `unshare --pid --fork --mount-proc --kill-child`): it gives the pod what a container has of its own, then
# becomes the image's entrypoint, which is thereby PID 1 of the pod with the container environment.
#
#   sh container.sh <the machine's home> <the pod's dotfiles folder> <entrypoint> [args...]
#
# - /run: a fresh private tmpfs, as a container's /run is its own. sshd's privilege separation folder
#   (/run/sshd) and lorapod's /run/lorapod live there, so pods never share them, and they vanish with the pod.
#   /run/lock as Debian and Ubuntu images have it.
# - The machine's dotfiles (~/.bashrc, ~/.profile...): covered by the pod's own empty files, the image's, so
#   that SSH sessions (root, HOME=/root) never run this machine's ~/.bashrc (its `pyenv init` rehash, killed
#   with the pod, leaves a lock behind) nor write this machine's dotfiles.
# The mounts exist only in this mount namespace (unshare makes it private): the machine sees none of them.
# Arguments, not variables: PID 1's environment is the container's, nothing added.
set -eu
home=$1
dotfiles=$2
shift 2
mount -t tmpfs -o mode=0755,nosuid,nodev lorapod-pod-run /run
mkdir -m 1777 /run/lock
for name in .bashrc .profile .bash_profile .bash_login .bash_logout; do
    if [ -f "$home/$name" ]; then
        [ -e "$dotfiles/$name" ] || : >"$dotfiles/$name"  # kept across restarts, as a container's files are
        mount --bind "$dotfiles/$name" "$home/$name"
    fi
done
exec "$@"
