"""The sweep's last word on pods: list the account's pods named for this sweep's runs, delete any still up.

Every job deletes its own pod; this runs once in the main process after the sweep (also after Ctrl-C, or a job
that died) and says what it found. A run that returned on purpose with its pod training (status detached:
`python -m engine.attach` picks it up) keeps its pod, and so does a run still live in a process here.
"""
from __future__ import annotations

import os
from pathlib import Path

from engine.sweep.summary import Job

PREFIX = "lorapod-"


def _provider(job: Job) -> tuple[str, str] | None:
    """(api_url, api_key_env) of a RunPod job, from its .hydra/config.yaml (Hydra writes it unresolved: no key)."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(job.folder / ".hydra" / "config.yaml")
        if OmegaConf.select(cfg, "provider.name") != "runpod":
            return None
        return str(OmegaConf.select(cfg, "provider.api_url")), str(OmegaConf.select(cfg, "provider.api_key_env"))
    except Exception:
        return None


def _live(job: Job) -> bool:
    from engine.reap import known_runs

    run = known_runs(job.folder).get(PREFIX + str(job.run_id))
    return bool(run and run.live_pid and run.live_pid != os.getpid())


def reap(all_jobs: list[Job], sweep_dir: Path) -> int:
    """Print what the check found; returns 0, or 1 when a pod may still be billing."""
    from engine.errors import LorapodError
    from engine.providers.runpod_api import RunPodApi, insecure_url
    from engine.secrets import add_secret_name, load_dotenv, redact

    groups: dict[tuple[str, str], dict[str, Job]] = {}
    for job in all_jobs:
        where = _provider(job) if job.run_id else None
        if where is None:
            continue
        if job.status == "detached":
            print(f"final check: job {job.name} is detached: its pod {PREFIX}{job.run_id} keeps training on purpose "
                  f"(python -m engine.attach {job.folder})")
            continue
        if _live(job):
            print(f"final check: job {job.name} is still running here: its pod is its own to delete")
            continue
        groups.setdefault(where, {})[PREFIX + str(job.run_id)] = job
    if not groups:
        return 0
    load_dotenv()
    code = 0
    for (url, key_env), named in groups.items():
        add_secret_name(key_env)
        key = os.environ.get(key_env)
        manual = f"python -m engine.reap --runs-dir {sweep_dir} --api-url {url}"
        if not key or insecure_url(url):
            print(f"final check SKIPPED for {len(named)} run(s): {insecure_url(url) or f'{key_env} is not set'}; "
                  f"check yourself: {manual}")
            code = 1
            continue
        api = RunPodApi(url, key, key_env=key_env)
        try:
            up = [p for p in api.list_pods() if p.get("name") in named and p.get("status") != "TERMINATED"]
            if not up:
                print(f"final check: no pod of this sweep's {len(named)} RunPod run(s) is up")
            for pod in up:
                job = named[pod["name"]]
                try:
                    api.delete_pod(pod["id"])
                    print(f"final check: pod {pod['id']} ({pod['name']}) of job {job.name} ({job.status}) was "
                          "still up: deleted it")
                except LorapodError as exc:
                    code = 1
                    print(f"final check: COULD NOT DELETE POD {pod['id']} ({pod['name']}) of job {job.name}: it may "
                          f"still be billing. {redact(str(exc))}. Run: python -m engine.reap --pod {pod['id']} --yes "
                          f"--api-url {url}")
        except LorapodError as exc:
            code = 1
            print(f"final check FAILED: could not list pods: {redact(str(exc))}; check yourself: {manual}")
        finally:
            api.close()
    return code
