"""Delete pods that no live run owns: `python -m engine.reap [--yes]`.

Lists RunPod pods named lorapod-*, leaves alone those whose run is still alive on this machine (a run
folder under --runs-dir whose state.json says running and whose process lives), shows the rest with what
they cost, and deletes them after confirmation (--yes for scripts). A run on another machine cannot be
seen from here: its pods are listed too, so read the table before you confirm.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

from engine.errors import LorapodError
from engine.providers.runpod_api import RunPodApi
from engine.secrets import load_dotenv


def live_pod_ids(runs_dir: Path) -> set[str]:
    owned, host = set(), socket.gethostname()
    for path in runs_dir.rglob("state.json"):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        owner, pod = state.get("owner") or {}, state.get("pod") or {}
        if state.get("status") == "running" and owner.get("host") == host and pod.get("id") \
                and _alive(int(owner.get("pid", 0))):
            owned.add(pod["id"])
    return owned


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.reap", description=__doc__.splitlines()[0])
    parser.add_argument("--yes", action="store_true", help="delete without asking")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where this machine's runs live")
    parser.add_argument("--api-url", default="https://api.runpod.io/v2")
    parser.add_argument("--api-key-env", default="RUNPOD_API_KEY")
    args = parser.parse_args(argv)
    load_dotenv()
    key = os.environ.get(args.api_key_env)
    if not key:
        print(f"error: {args.api_key_env} is not set (environment or .env)", file=sys.stderr)
        return 2
    api = RunPodApi(args.api_url, key)
    try:
        pods = [p for p in api.list_pods() if str(p.get("name", "")).startswith("lorapod-")
                and p.get("status") != "TERMINATED"]
        owned = live_pod_ids(args.runs_dir)
        orphans = [p for p in pods if p["id"] not in owned]
        for pod in pods:
            mark = "owned by a live run" if pod["id"] in owned else "ORPHAN"
            print(f"{pod['id']:<20} {pod['name']:<34} {pod.get('status', '?'):<12} "
                  f"${float(pod.get('cost') or 0):.2f}/h  {mark}")
        if not orphans:
            print("no orphaned lorapod pods")
            return 0
        if not args.yes and input(f"delete {len(orphans)} orphaned pod(s)? [y/N] ").strip().lower() != "y":
            print("nothing deleted")
            return 1
        for pod in orphans:
            api.delete_pod(pod["id"])
            print(f"deleted {pod['id']} ({pod['name']})")
        return 0
    except LorapodError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        api.close()


if __name__ == "__main__":
    sys.exit(main())
