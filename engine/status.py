"""Every run and every lorapod pod at a glance: `python -m engine.status [--runs-dir DIR] [--json]`.

The runs under --runs-dir (default: runs/ in the current folder, sweeps' runs/multirun/... included), newest first:
status, stage, pod, elapsed, cost so far, eval loss, adapter. A run whose state.json says running while its process
is gone (killed, or the laptop slept) is shown as `stale`. With a RunPod API key (RUNPOD_API_KEY, or the variable
provider.api_key_env names, from the environment or .env), also the account's live pods named lorapod-*, each with
the run here that owns it; one no run here owns is flagged with the command that deletes it. Only reads: it
deletes nothing and changes no run.

Exit status: 0, also when some run folder could not be read (a warning on stderr) or no key is set; 1 when the
RunPod API failed; 2 for a bad --api-url.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine import runs
from engine.runs import RunRow

COLUMNS = ("run", "started", "status", "stage", "pod", "elapsed", "cost", "eval loss", "adapter", "folder")
POD_COLUMNS = ("pod", "name", "status", "$/h", "uptime", "run", "note")
URL_ENV = "LORAPOD_RUNPOD_API_URL"  # where the API is, when not provider.api_url (the emulator, in tests)
RETRY_S = 15.0  # a listing is worth a short wait, not provider.api_retry_s of it
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass
class Settings:
    api_url: str
    api_key_env: str
    timeout_s: float


def provider_settings(api_url: str | None, warnings: list[str]) -> Settings:
    """The default runpod provider's API settings, composed as `run.py provider=runpod` would; --api-url, then
    $LORAPOD_RUNPOD_API_URL, win over provider.api_url."""
    from engine.schema import RunPodProviderConfig

    settings = Settings(RunPodProviderConfig.api_url, RunPodProviderConfig.api_key_env,
                        RunPodProviderConfig.request_timeout_s)
    try:
        from engine.compose import CONFIG_ERRORS, jobs, one_line

        try:
            [(_, cfg)] = jobs(["provider=runpod"], multirun=False)
            p = cfg.provider
            settings = Settings(str(p.api_url), str(p.api_key_env), float(p.request_timeout_s))
        except CONFIG_ERRORS as exc:
            warnings.append(f"conf/provider/runpod.yaml does not compose ({one_line(exc)}); using the schema's "
                            "defaults for the API")
    except ImportError as exc:  # no Hydra here: the schema's defaults are the provider's
        warnings.append(f"cannot compose the config ({exc}); using the schema's defaults for the API")
    settings.api_url = api_url or os.environ.get(URL_ENV) or settings.api_url
    return settings


def live_pods(settings: Settings, key: str) -> list[dict]:
    """The account's pods that are not gone. Raises ProviderError (LorapodError) when the API fails."""
    from engine.providers.runpod_api import RunPodApi

    api = RunPodApi(settings.api_url, key, settings.timeout_s, RETRY_S, key_env=settings.api_key_env)
    try:
        return [p for p in api.list_pods() if isinstance(p, dict) and p.get("status") != "TERMINATED"]
    finally:
        api.close()


def owners(pods: list[dict], rows: list[RunRow]) -> dict[str, RunRow]:
    """Each pod's run here, by pod id first (state.json's pod), then by the run's unique pod name (a create whose
    answer was lost has a name and no id). Newest run first when two claim one."""
    by_id = {r.pod_id: r for r in reversed(rows) if r.pod_id}
    by_name = {r.pod_name: r for r in reversed(rows) if r.pod_name}
    found = {}
    for pod in pods:
        row = by_id.get(str(pod.get("id"))) or by_name.get(str(pod.get("name")))
        if row is not None:
            found[str(pod.get("id"))] = row
    return found


def pod_note(pod: dict, row: RunRow | None, reap: str) -> str:
    delete = f"{reap} --pod {pod.get('id')}"
    if row is None:
        return f"no run here owns it: delete with {delete}"
    attach = f"python -m engine.attach {row.folder}"
    if row.status == "running":
        return f"its run is going (pid {row.owner.get('pid')})"
    if row.status == "running?":
        return f"its run runs on {row.owner.get('host')}: ask there"
    if row.status == "detached":
        return f"detached on purpose: {attach} follows it to the end"
    if row.status == "stale":
        return f"its run's process is gone: {attach} picks it up, or delete with {delete}"
    return f"its run ended ({row.status}) but the pod is still up: delete with {delete}"


def run_notes(rows: list[RunRow], reap: str) -> list[str]:
    """What a person should know about runs that need them: stale ones, detached ones."""
    notes = []
    for row in rows:
        name = row.run_id or row.folder
        attach = f"python -m engine.attach {row.folder}"
        if row.status == "stale":
            pod = ("nothing was rented" if row.pod_id is None and not row.create_sent else
                   f"its pod {row.pod_id or row.pod_name} is gone" if row.pod_live is False or row.pod_terminated else
                   f"its pod {row.pod_id or row.pod_name} may still bill")
            delete = f", or {reap} --pod {row.pod_id} deletes it" if row.pod_id and row.pod_live is not False and \
                not row.pod_terminated else ""
            notes.append(f"{name}: state.json says running (stage {row.stage}) but its process "
                         f"(pid {row.owner.get('pid')}) is gone; {pod}: {attach} picks it up{delete}"
                         + (_watchdog_note(row) if row.pod_live is not False and not row.pod_terminated else ""))
        elif row.status == "detached":
            notes.append(f"{name}: detached; {attach} follows it to the end")
        elif row.status == "running?":
            notes.append(f"{name}: running on {row.owner.get('host')}, which this machine cannot check")
    return notes


def heartbeat_timeout_s(folder: str) -> float | None:
    """The run's provider.heartbeat_timeout_s from its composed config; None for a provider without a watchdog."""
    import yaml

    try:
        cfg = yaml.safe_load((Path(folder) / ".hydra" / "config.yaml").read_text(encoding="utf-8"))
        value = cfg["provider"]["heartbeat_timeout_s"]
    except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _watchdog_note(row: RunRow) -> str:
    """Without a detach, the pod's watchdog deletes it provider.heartbeat_timeout_s after the heartbeat stopped,
    so attach works only that long after the process died: said against state.json's last write (about when
    the heartbeat stopped)."""
    timeout = heartbeat_timeout_s(row.folder)
    if timeout is None or row.last_write is None:
        return ""
    silent = max(0.0, time.time() - row.last_write)
    if silent >= timeout:
        return (f" (silent {silent / 60:.0f} min, past provider.heartbeat_timeout_s={timeout:.0f}s: its pod's "
                "watchdog has probably deleted it)")
    return (f" (silent {silent / 60:.0f} min: attach within {(timeout - silent) / 60:.0f} min, before its pod's "
            f"watchdog deletes it at provider.heartbeat_timeout_s={timeout:.0f}s)")


def _clean(text, width: int = 40) -> str:
    """A cell: control characters (a terminal's escape sequences) made visible, long text cut."""
    text = _CONTROL.sub("?", "-" if text is None else str(text))
    return text if len(text) <= width else text[:width - 3] + "..."


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _cost(row: RunRow) -> str:
    if row.cost_usd is None:
        return "-"
    return {"actual": f"${row.cost_usd:.2f}", "live": f"~${row.cost_usd:.2f}+"}.get(row.cost_kind,
                                                                                  f"~${row.cost_usd:.2f}")


def _loss(row: RunRow) -> str:
    if row.eval_loss_before is None and row.eval_loss_after is None:
        return "-"
    show = lambda v: "?" if v is None else f"{v:.3f}"  # noqa: E731
    return f"{show(row.eval_loss_before)} -> {show(row.eval_loss_after)}"


def _started(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def _relative(folder: str, root: Path) -> str:
    try:
        return str(Path(folder).relative_to(root))
    except ValueError:
        return folder


def run_cells(row: RunRow, root: Path) -> tuple[str, ...]:
    pod = row.pod_id or "-"
    if row.pod_id and row.pod_live:
        pod += " (up)"
    # The registry names an adapter after its run: then its gate status says all
    adapter = "-" if not row.adapter_id else row.adapter_status or "?" if row.adapter_id == row.run_id else \
        f"{row.adapter_id} ({row.adapter_status})"
    return tuple(_clean(c) for c in (row.run_id or "?", _started(row.started_at), row.status, row.stage or "-",
                                     pod, _duration(row.elapsed_s), _cost(row), _loss(row), adapter,
                                     _relative(row.folder, root)))


def pod_cells(pod: dict, row: RunRow | None, reap: str) -> tuple[str, ...]:
    price = runs._num(pod.get("cost"))
    runtime = pod.get("runtime") if isinstance(pod.get("runtime"), dict) else {}
    uptime = runs._num(runtime.get("uptime"))
    return tuple(_clean(c, 60 if i == 6 else 40) for i, c in enumerate((
        pod.get("id"), pod.get("name"), pod.get("status"), "-" if price is None else f"{price:.2f}",
        _duration(uptime), (row.run_id or row.folder) if row else "-", pod_note(pod, row, reap))))


def pod_json(pod: dict, row: RunRow | None, reap: str) -> dict:
    runtime = pod.get("runtime") if isinstance(pod.get("runtime"), dict) else {}
    return {"id": pod.get("id"), "name": pod.get("name"), "status": pod.get("status"), "cost_per_hour": pod.get("cost"),
            "uptime_s": runtime.get("uptime"), "run_id": row.run_id if row else None,
            "run_folder": row.folder if row else None, "note": pod_note(pod, row, reap)}


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.status", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="where the run folders are (default: runs/ in the current folder)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")
    p.add_argument("--api-url", default=None,
                   help=f"RunPod's API (default: ${URL_ENV}, else provider.api_url of conf/provider/runpod.yaml)")
    return p


def main(argv: list[str] | None = None) -> int:
    from loguru import logger

    from engine.secrets import add_secret_name, load_dotenv, redact

    args = parser().parse_args(argv)
    logger.remove()  # the API client's retry lines are run.log material; here the outcome is one line
    root = args.runs_dir.resolve()
    rows, warnings = runs.load(root)
    if not args.runs_dir.is_dir():
        warnings.append(f"{args.runs_dir}: no such folder, so no runs (choose one with --runs-dir)")

    load_dotenv()
    settings = provider_settings(args.api_url, warnings)
    add_secret_name(settings.api_key_env)
    key = os.environ.get(settings.api_key_env)
    pods: list[dict] | None = None
    note = error = None
    code = 0
    from engine.providers.runpod_api import DEFAULT_API_URL, insecure_url

    refused = insecure_url(settings.api_url)
    if not key:
        note = (f"live pods: not shown: {settings.api_key_env} is not set (environment or .env), so the account "
                "cannot be asked which pods are up")
    elif refused:  # the key would cross the network in clear text
        error, code = f"--api-url: {refused}", 2
    else:
        from engine.errors import LorapodError

        try:
            pods = live_pods(settings, key)
        except LorapodError as exc:
            what = "; ".join(part.strip().removeprefix("-> ") for part in str(exc).splitlines() if part.strip())
            error, code = f"live pods: the RunPod API failed: {redact(what)}", 1
    ours = [p for p in pods or [] if str(p.get("name", "")).startswith(runs.PREFIX)]
    live = {str(p.get("id")): p for p in ours} if pods is not None else None
    now = time.time()
    for row in rows:
        runs.settle(row, live, now)
    owned = owners(ours, rows)
    reap = "python -m engine.reap" + ("" if settings.api_url == DEFAULT_API_URL else f" --api-url {settings.api_url}")

    for warning in warnings:  # stderr: --json stays parseable
        sys.stderr.write(f"warning: {_CONTROL.sub('?', warning)}\n")
    if args.json:
        out = {"runs_dir": str(root), "runs": [r.to_json() for r in rows], "warnings": warnings,
               "pods": None if pods is None else [pod_json(p, owned.get(str(p.get("id"))), reap) for p in ours],
               "other_pods": None if pods is None else len(pods) - len(ours),
               "pods_note": note, "error": error}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        print(table([run_cells(r, root) for r in rows], COLUMNS) if rows else f"no runs under {root}")
        for line in run_notes(rows, reap):
            print(_clean(line, 10_000))
        if pods is not None:
            print()
            print(table([pod_cells(p, owned.get(str(p.get("id"))), reap) for p in ours], POD_COLUMNS)
                  if ours else "no live lorapod-* pods on the account")
            if len(pods) > len(ours):
                print(f"({len(pods) - len(ours)} other pod(s), not named {runs.PREFIX}*, are not lorapod's: not shown)")
        elif note:
            print()
            print(note)
    if error:
        sys.stderr.write(f"error: {error}\n")
    return code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
