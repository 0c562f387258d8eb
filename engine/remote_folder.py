"""Is a work folder on a shared machine safe to run in? (provider=ssh)

Between the verified upload and the start of training, whoever can write to the run folder's parent can swap
the files in it: the dataset, the training script. So every folder from / down to the workdir must belong to
you or to root, and none may be writable by group or others, with OpenSSH's StrictModes exception: a sticky
folder (/tmp) is fine above a folder of yours, since others cannot rename or delete what is yours in it. A
workdir that does not exist yet must not be created in a folder others can write, sticky or not: someone could
make it first. Both the path as given and the path with its symlinks resolved are checked.

One shell command (POSIX sh, coreutils' stat and realpath) reports the user, $HOME, and each folder's owner
and mode; the verdict is made here.
"""
from __future__ import annotations

import posixpath
import shlex

# $1: the workdir, or empty for the default. `~` or `~/...` is the remote user's home.
_CHECK = r'''
w="$1"
[ -n "$w" ] || w="$HOME/lorapod"
case "$w" in "~") w="$HOME" ;; "~/"*) w="$HOME/${w#"~/"}" ;; esac
echo "uid $(id -u)"
echo "dir $w"
walk() {
    p="$1"
    while :; do
        if [ -e "$p" ] || [ -L "$p" ]; then stat -c 'stat %u %a %F|%n' -- "$p" || exit 1; fi
        [ "$p" = / ] || [ "$p" = . ] && break
        p=$(dirname -- "$p")
    done
}
walk "$w"
real=$(realpath -m -- "$w" 2>/dev/null) && [ "$real" != "$w" ] && echo "real $real" && walk "$real"
echo end
'''


def check_command(workdir: str | None) -> str:
    return f"sh -c {shlex.quote(_CHECK)} lorapod {shlex.quote(workdir or '')}"


def verdict(lines: list[str]) -> tuple[str, str | None]:
    """(the workdir, with $HOME and ~ resolved; the first problem found or None) from check_command's output."""
    uid, workdir, seen = None, None, {}
    for line in lines:
        head, _, rest = line.partition(" ")
        if head == "uid":
            uid = int(rest)
        elif head == "dir":
            workdir = rest
        elif head == "stat":
            owner, mode, kind_path = rest.split(" ", 2)
            kind, _, path = kind_path.partition("|")
            seen[posixpath.normpath(path)] = (int(owner), int(mode, 8), kind)
    if uid is None or workdir is None or not lines or lines[-1] != "end":
        return workdir or "?", f"could not check the folders above the workdir: {' '.join(lines)[-300:]}"
    if not workdir.startswith("/"):
        return workdir, f"{workdir} is not an absolute path"
    real = next((line[5:] for line in lines if line.startswith("real ")), None)
    for path in [workdir] + ([real] if real else []):
        problem = _check_path(posixpath.normpath(path), uid, seen)
        if problem:
            return workdir, problem
    return workdir, None


def _check_path(path: str, uid: int, seen: dict[str, tuple[int, int, str]]) -> str | None:
    chain = [path]
    while chain[-1] != "/":
        chain.append(posixpath.dirname(chain[-1]))
    chain.reverse()  # / first
    for i, folder in enumerate(chain):
        if folder not in seen:
            return None  # made by us from here down, in a folder only we (or root) can write to: checked above
        owner, mode, kind = seen[folder]
        if kind == "symbolic link":
            continue  # its parent was checked; the folders it leads to are checked as the resolved path
        if owner not in (0, uid):
            return f"{folder} belongs to uid {owner}, not to you (uid {uid}) or root: its owner can swap the run's files"
        if mode & 0o022:
            below = chain[i + 1] if i + 1 < len(chain) else None
            if below is not None and below not in seen:
                return (f"{path} does not exist and would be made in {folder}, which others can write to "
                        f"(mode {mode:o}): someone could make it first")
            if not (mode & 0o1000 and below is not None and seen[below][0] in (0, uid)):
                who = "others" if mode & 0o002 else "its group"
                return f"{folder} is writable by {who} (mode {mode:o}): whoever can write there can swap the run's files"
    return None
