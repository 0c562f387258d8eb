"""Delete RunPod pods that lorapod runs left behind: `python -m engine.reap [--yes]`.

Deletes only what is provably ours: a pod whose name is exactly `lorapod-<run id>` of a run folder under
--runs-dir (its state.json), and whose run is not still alive on this machine. Every other `lorapod-*` pod
is listed as UNCLAIMED — a run on another machine, another checkout, or a name someone else chose — and is
deleted only when named (`--pod ID`) or with `--unclaimed`. Pods with other names are never touched.
Each deletion is confirmed first unless --yes is given.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from engine import process
from engine.context import PROJECT_ROOT
from engine.errors import LorapodError
from engine.providers.runpod_api import DEFAULT_API_URL, RunPodApi, insecure_url
from engine.secrets import add_secret_name, load_dotenv, redact

PREFIX = "lorapod-"


@dataclass
class Run:
    folder: Path
    status: str
    live_pid: int | None  # the pid of the process still running it on this machine, if any


def known_runs(runs_dir: Path) -> dict[str, Run]:
    """The pod name each run folder under runs_dir would have used (`lorapod-<run id>`), with its run."""
    runs = {}
    for path in sorted(runs_dir.rglob("state.json")) if runs_dir.is_dir() else []:
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            run_id = str(state["run_id"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        owner = state.get("owner") or {}
        live = state.get("status") == "running" and process.alive(owner, state.get("started_at")) is True
        runs[PREFIX + run_id] = Run(path.parent, str(state.get("status")), owner.get("pid") if live else None)
    return runs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine.reap", description=__doc__.splitlines()[0])
    parser.add_argument("--yes", action="store_true", help="delete without asking")
    parser.add_argument("--pod", action="append", default=[], metavar="ID",
                        help="delete this pod only (repeatable); it may be unclaimed, never a live run's")
    parser.add_argument("--unclaimed", action="store_true",
                        help="also delete lorapod-* pods that no run folder under --runs-dir names")
    parser.add_argument("--runs-dir", type=Path, default=PROJECT_ROOT / "runs",
                        help="where this machine's run folders are (default: the project's runs/)")
    parser.add_argument("--api-url", default=DEFAULT_API_URL)
    parser.add_argument("--api-key-env", default="RUNPOD_API_KEY", help="the variable holding the API key")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    load_dotenv()
    add_secret_name(args.api_key_env)
    key = os.environ.get(args.api_key_env)
    refused = insecure_url(args.api_url)
    if refused or not key:
        print(f"error: --api-url: {refused}" if refused else
              f"error: {args.api_key_env} is not set (environment or .env)", file=sys.stderr)
        return 2
    api = RunPodApi(args.api_url, key, key_env=args.api_key_env)
    try:
        return _reap(api, args)
    except LorapodError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 1
    finally:
        api.close()


def _reap(api: RunPodApi, args: argparse.Namespace) -> int:
    runs = known_runs(args.runs_dir)
    pods = [p for p in api.list_pods() if p.get("status") != "TERMINATED"]
    ours = [p for p in pods if str(p.get("name", "")).startswith(PREFIX)]
    targets, refused = [], 0
    for pod in ours:
        run = runs.get(pod["name"])
        if run is None:
            verdict = f"UNCLAIMED: no run under {args.runs_dir} is named so"
        elif run.live_pid:
            verdict = f"its run is live here (pid {run.live_pid}): {run.folder}"
        else:
            verdict = f"ORPHAN of run {run.folder} ({run.status})"
        print(f"{pod['id']:<20} {pod['name']:<34} {pod.get('status', '?'):<12} "
              f"${float(pod.get('cost') or 0):.2f}/h  {verdict}")
        live = run is not None and run.live_pid is not None
        if args.pod and pod["id"] in args.pod and live:
            print(f"  not deleting {pod['id']}: stop its run first (Ctrl-C in its terminal)", file=sys.stderr)
            refused += 1
        elif (pod["id"] in args.pod) if args.pod else (not live and (run is not None or args.unclaimed)):
            targets.append(pod)
    others = len(pods) - len(ours)
    if others:
        print(f"({others} pod(s) not named {PREFIX}* are not lorapod's and are left alone)")
    for pod_id in args.pod:
        match = [p for p in pods if p["id"] == pod_id]
        if not match:
            print(f"pod {pod_id} does not exist (any more): nothing to delete")
        elif match[0] not in ours:
            print(f"  not deleting {pod_id}: it is named {match[0].get('name')!r}, not {PREFIX}*; "
                  "delete it in RunPod's console", file=sys.stderr)
            refused += 1
    if not args.pod and not args.unclaimed and any(p["name"] not in runs for p in ours):
        print("unclaimed pods are deleted only with --pod ID or --unclaimed")
    if not targets:
        print("nothing to delete")
        return 1 if refused else 0
    names = ", ".join(f"{p['id']} ({p['name']})" for p in targets)
    if not args.yes and input(f"delete {len(targets)} pod(s): {names}? [y/N] ").strip().lower() != "y":
        print("nothing deleted")
        return 1
    failed = 0
    for pod in targets:
        try:
            api.delete_pod(pod["id"])
            print(f"deleted {pod['id']} ({pod['name']})")
        except LorapodError as exc:
            failed += 1
            print(f"error: could not delete {pod['id']}: {redact(str(exc))}", file=sys.stderr)
    return 1 if failed or refused else 0


if __name__ == "__main__":
    sys.exit(main())
