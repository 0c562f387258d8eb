#!/bin/sh
# The first process of an emulated pod's own PID and mount namespaces (PodMachine starts it with
# `unshare --pid --fork --mount-proc --kill-child`): it gives the pod what a container has of its own, then
# becomes the image's entrypoint, which is thereby PID 1 of the pod with the container environment.
#
#   sh container.sh <the machine's home> <the pod's dotfiles folder> <the pod's /run folder> <entrypoint> [args...]
#
# - /run: the pod's own folder (PodMachine makes it, 0755 and root's, at the pod's first boot), bound over
#   /run. Docker puts no tmpfs on /run (only what --tmpfs or --mount type=tmpfs asks for): a container's /run
#   is part of its writable layer, which a restart of the same container keeps (`docker restart` is a stop
#   and a start of that container, moby/moby#39342; so is RunPod restarting a container that exited). So
#   what a pod left in /run (sshd's /run/sshd and sshd.pid, a watchdog's lock, pid and status files in
#   /run/lorapod) is still there when it boots again: stale files to be reckoned with. RunPod's storage page
#   (docs.runpod.io/pods/storage) says the container disk is "Lost on stop/restart"; where the sources
#   disagree, the harsher reading: kept across restart and stop/start. Pods never share it; the machine's
#   own /run is not seen. /run/lock as Debian and Ubuntu images have it.
# - The machine's dotfiles (~/.bashrc, ~/.profile...): covered by the pod's own empty files, the image's, so
#   that SSH sessions (root, HOME=/root) never run this machine's ~/.bashrc (its `pyenv init` rehash, killed
#   with the pod, leaves a lock behind) nor write this machine's dotfiles.
# The mounts exist only in this mount namespace (unshare makes it private): the machine sees none of them.
# Arguments, not variables: PID 1's environment is the container's, nothing added.
set -eu
home=$1
dotfiles=$2
run=$3
shift 3
mount --bind "$run" /run
mkdir -p -m 1777 /run/lock
for name in .bashrc .profile .bash_profile .bash_login .bash_logout; do
    if [ -f "$home/$name" ]; then
        [ -e "$dotfiles/$name" ] || : >"$dotfiles/$name"  # kept across restarts, as a container's files are
        mount --bind "$dotfiles/$name" "$home/$name"
    fi
done
exec "$@"
