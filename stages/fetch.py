"""fetch: bring home what training made, each file checked against result.json's sha256 and sized before it
is downloaded.

The pod is not trusted: result.json's `files` map is a request, and fetch decides what comes home
(stages/fetch_rules.py).

- Allowed: `adapter/…`, `base_model/…` (model=tiny's random base, which exists nowhere else), `plots/…` and
  `*.png` at the top (the trainer writes none yet), `metrics.jsonl`. result.json itself is fetched first, on
  its own: it cannot carry its own hash. Checkpoint folders are skipped with a warning; they stay on the pod.
- Refused: anything else; a path that is not plain (absolute, `..`, `.`, `//`, a backslash, a control
  character); a name of the run's own records (run.log, state.json, run-summary.json, train.log, config.json,
  result.json, .hydra/, ssh/, dataset/, pod/) in any letter case, since a case-insensitive disk would
  overwrite them; a destination that exists as a symlink or as anything but a regular file, or lies below a
  symlink; an entry without a sha256; a pod file that is a symlink, or lies below one inside out/ (it would
  bring home what it points at: /etc/shadow, /run/lorapod/credentials, /dev/zero), checked with lstat and
  again as the download starts; a pod file that is not a regular file.
- Sizes (provider.max_fetch_mb, default 2048): result.json must be at most 1 MB before it is downloaded.
  Every other file is stat'ed on the pod before anything is downloaded; one over the cap is refused, and when
  the rest together are over it, whole groups come home in the order adapter, base_model, metrics, plots
  while they fit (half an adapter is no use). A file that grows past its checked size during the download is
  cut off and refused, leaving no partial file.

One bad entry does not stop the good ones. Every allowed file is fetched and verified, and then the stage
fails, naming each refused entry and why. Terminate deletes the pod right after, so refusing everything would
throw away an adapter that is fine; refused entries are never written, and the failed stage makes the run
fail, loudly in the console and in run-summary.json. Only a result.json that cannot be read (missing, over
its cap, not JSON, no `files` map) stops fetch at once, since every other decision is read from it.
"""
from __future__ import annotations

import json
import posixpath
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from loguru import logger

from engine.context import RunContext
from engine.errors import StageError, TransportError
from engine.pod_secrets import remove_token
from engine.stage import BaseStage
from stages.fetch_rules import ALLOWED, group, plain, refusal, safe_destination

__all__ = ["Fetch", "safe_destination"]

MB = 1 << 20
DEFAULT_MAX_FETCH_MB = 2048.0  # for a provider config without max_fetch_mb (a provider of your own)
RESULT_MAX_BYTES = MB  # result.json is metadata: a few KB, even listing thousands of files
ORDER = ("adapter", "base_model", "metrics.jsonl", "plots")  # what comes home first when the cap bites
SHOWN = 20  # refusals listed in the error; a hostile list can be long
POLICY, SIZE, TRANSFER = "policy", "size", "transfer"


@dataclass
class Wanted:
    rel: str
    sha256: str
    dest: Path
    size: int = 0


def _size(n: int) -> str:
    return f"{n / MB:.1f} MB" if n >= MB // 10 else f"{n:,} bytes"


class Fetch(BaseStage):
    @staticmethod
    def check_config(cfg) -> list[tuple[str, str]]:
        # Checked here rather than by each provider: every provider has the key, only fetch reads it.
        cap = cfg.provider.get("max_fetch_mb", DEFAULT_MAX_FETCH_MB)
        return [] if cap > 0 else [("provider.max_fetch_mb", f"must be > 0 (got {cap})")]

    def run(self, ctx: RunContext) -> None:
        remove_token(ctx)  # training is over: the token goes first, whatever happens to the rest of fetch
        if ctx.transport is None:
            raise StageError("no connection to the pod", "the pipeline needs a probe stage before fetch")
        out = posixpath.join(ctx.remote_dir, "out")
        cap_mb = ctx.cfg.provider.get("max_fetch_mb", DEFAULT_MAX_FETCH_MB)
        started = time.monotonic()
        result = _fetch_result(ctx, posixpath.join(out, "result.json"))
        refused: list[tuple[str, str, str]] = []
        wanted = _plan(ctx.run_dir, result.get("files") or {}, refused)
        wanted = _sized(ctx, out, wanted, int(cap_mb * MB), cap_mb, refused)

        total, fetched = 0, 0
        for want in wanted:
            try:  # at most the checked size: a file that grows meanwhile is cut off and refused
                ctx.transport.get(posixpath.join(out, want.rel), want.dest, sha256=want.sha256, max_bytes=want.size)
            except TransportError as exc:
                refused.append((want.rel, f"was not fetched: {exc.message}", TRANSFER))
                continue
            total += want.size
            fetched += 1
        ctx.state.outputs["result"] = {k: v for k, v in result.items() if k != "files"}
        ctx.state.outputs["fetch"] = {"bytes": total, "seconds": round(time.monotonic() - started, 3),
                                      "refused": sorted(rel for rel, _, _ in refused)}
        logger.info(f"fetched {fetched} files ({total / 1e6:.2f} MB), sha256 verified; "
                    f"eval loss {result.get('eval_loss_before')} -> {result.get('eval_loss_after')}")
        if refused:
            raise _refused_error(refused, fetched, result, cap_mb)
        if result.get("status") != "succeeded":
            raise StageError(f"training reported {result.get('status')}: {result.get('error')}")


def _fetch_result(ctx: RunContext, remote: str) -> dict:
    """result.json, sized before it is downloaded, so a huge one is never read."""
    size = ctx.transport.size(remote)
    if size > RESULT_MAX_BYTES:
        raise StageError(f"the pod's result.json is {_size(size)}, over the {_size(RESULT_MAX_BYTES)} a training "
                         "summary can need; nothing was fetched",
                         "the pod's output is not what train_unsloth.py writes, so it is not trusted")
    dest = safe_destination(ctx.run_dir, "result.json")
    ctx.transport.get(remote, dest, max_bytes=size)
    try:
        result = json.loads(dest.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StageError(f"the pod's result.json is not JSON ({exc}); nothing else was fetched") from exc
    if not isinstance(result, dict) or not isinstance(result.get("files") or {}, dict):
        raise StageError("the pod's result.json has no `files` map; nothing else was fetched",
                         "the pod's output is not what train_unsloth.py writes, so it is not trusted")
    return result


def _plan(run_dir: Path, files: dict, refused: list) -> list[Wanted]:
    """The entries that may come home, by name and destination; the others go to `refused`."""
    wanted = []
    for rel, digest in sorted(files.items()):
        if rel == "result.json":
            continue  # fetched already
        if plain(rel) and any(p.startswith("checkpoint") for p in PurePosixPath(rel).parts):
            logger.warning(f"not fetching {rel}: checkpoints stay on the pod")
            continue
        why = refusal(rel, digest)
        if why is None:
            try:
                wanted.append(Wanted(rel, digest, safe_destination(run_dir, rel)))
            except StageError as exc:
                why = exc.message.replace(f"result.json lists {rel!r}, ", "")
        if why:
            refused.append((rel, why, POLICY))
    # A name listed both as a file and as another entry's folder would fail halfway: it does not come home.
    folders = {str(p) for w in wanted for p in PurePosixPath(w.rel).parents}
    refused += [(w.rel, "is also listed as a folder", POLICY) for w in wanted if w.rel in folders]
    return [w for w in wanted if w.rel not in folders]


def _sized(ctx: RunContext, out: str, wanted: list[Wanted], cap: int, cap_mb: float, refused: list) -> list[Wanted]:
    """Every size before any download, so a refusal costs no bandwidth and no disk."""
    kept = []
    for want in wanted:
        try:
            want.size = ctx.transport.size(posixpath.join(out, want.rel), within=out)  # no link on the way
        except TransportError as exc:
            refused.append((want.rel, f"cannot be fetched: {exc.message}", TRANSFER))
            continue
        if want.size > cap:
            refused.append((want.rel, f"is {_size(want.size)}, over provider.max_fetch_mb={cap_mb:g}", SIZE))
        else:
            kept.append(want)
    left, within = cap, []
    for name in ORDER + tuple(sorted({group(w.rel) for w in kept} - set(ORDER))):  # none is dropped unsaid
        members = [w for w in kept if group(w.rel) == name]
        size = sum(w.size for w in members)
        if size <= left:
            within += members
            left -= size
        else:
            refused += [(w.rel, f"{name} is {_size(size)} in all, more than the {_size(left)} left of "
                                f"provider.max_fetch_mb={cap_mb:g}", SIZE) for w in members]
    return within


def _refused_error(refused: list[tuple[str, str, str]], fetched: int, result: dict, cap_mb: float) -> StageError:
    lines = [f"  - {rel!r:.200}: {why}" for rel, why, _ in refused[:SHOWN]]
    if len(refused) > SHOWN:
        lines.append(f"  … and {len(refused) - SHOWN} more")
    kinds = {kind for _, _, kind in refused}
    hints = []
    if POLICY in kinds:
        hints.append(f"only {ALLOWED} come home, never over the run's own records: this pod's output is not what "
                     "train_unsloth.py writes, so it is not trusted")
    if SIZE in kinds:
        hints.append(f"if these sizes are expected, raise provider.max_fetch_mb (now {cap_mb:g})")
    if TRANSFER in kinds:
        hints.append("a file that changes while it is fetched, or a lost connection, is not brought home")
    status = "" if result.get("status") == "succeeded" else f" Training reported {result.get('status')}."
    return StageError(f"fetch refused {len(refused)} of the files result.json lists ({fetched} allowed ones were "
                      f"fetched and verified; nothing refused was written).{status}\n" + "\n".join(lines),
                      "; ".join(hints))
