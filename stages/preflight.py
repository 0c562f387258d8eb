"""preflight: prove the path to a GPU for cents before a long run (`python run.py gpu=rtx5090 pipeline=preflight`).

After deploy and probe have rented and reached the pod, Preflight checks, one line each: SSH with the pinned host
key, the deadline watchdog armed with a credential that authenticates, the training closure, the interpreter,
torch and CUDA, the GPU's name and compute capability against the kernels torch carries, and that bitsandbytes,
triton, xformers and unsloth import (remote_image/preflight_checks.py, under the interpreter training uses);
with preflight.train=true also a short real training run (upload + train with train.max_steps=preflight.steps).
It records the lines and fails when one failed. PreflightReport runs after terminate, always, and prints them
with what the pod cost.
"""
from __future__ import annotations

import base64
import hashlib
import json
import posixpath
import shlex

from loguru import logger
from omegaconf import OmegaConf

from engine.budget import BudgetReached
from engine.context import PROJECT_ROOT, RunContext
from engine.errors import Detached, Interrupted, LorapodError, StageError
from engine.stage import BaseStage
from engine.summary import billed_seconds

CHECKS_NAME = "preflight_checks.py"
CHECKS = PROJECT_ROOT / "remote_image" / CHECKS_NAME
OK, FAIL, NO_GPU = "ok", "fail", "no GPU"
GPU_LINES = ("cuda", "gpu")


def gpu_required(cfg) -> bool:
    """preflight.require_gpu, or by default: whether the gpu option asks for one (gpu=cpu does not)."""
    required = cfg.preflight.require_gpu
    return bool(cfg.gpu.count > 0 and cfg.gpu.id) if required is None else bool(required)


class Preflight(BaseStage):
    @staticmethod
    def check_config(cfg) -> list[tuple[str, str]]:
        if cfg.preflight.steps < 1:
            return [("preflight.steps", f"must be >= 1 (got {cfg.preflight.steps})")]
        return []

    def run(self, ctx: RunContext) -> None:
        if ctx.transport is None:
            raise StageError("no connection to the pod", "the pipeline needs a probe stage before preflight")
        rows = [*_connection_rows(ctx), *_pod_rows(ctx)]
        ctx.state.outputs["preflight"] = rows
        ctx.save()
        if ctx.cfg.preflight.train:
            rows.append(_train_row(ctx))
            ctx.save()
        required = gpu_required(ctx.cfg)
        failed = [r for r in rows if r["status"] == FAIL or (r["status"] == NO_GPU and required)]
        if failed:
            names = ", ".join(r["check"] for r in failed)
            hint = ("a GPU was asked for (gpu.count > 0) and the pod shows none: try another gpu option or cloud"
                    if any(r["status"] == NO_GPU for r in failed) else "the table after terminate says why")
            raise StageError(f"preflight: {len(failed)} check(s) failed: {names}", hint)
        logger.info(f"preflight: all {len(rows)} checks passed" + ("" if required else " (no GPU required)"))


class PreflightReport(BaseStage):
    """Runs after terminate, whatever happened: the checks and what the pod cost, in one table."""

    always = True

    def run(self, ctx: RunContext) -> None:
        rows = ctx.state.outputs.get("preflight") or []
        pod = ctx.state.pod or {}
        head = (f"preflight of pod {pod['id']} ({pod.get('gpu') or ctx.cfg.gpu.name}"
                f"{', ' + pod['cloud'] if pod.get('cloud') else ''})" if pod.get("id") else "preflight (no pod)")
        lines = [head + ":"] + (_table(rows) if rows else ["  no checks ran: the stage before them failed (above)"])
        lines.append("  " + cost_line(ctx))
        logger.info("\n".join(lines))


def cost_line(ctx: RunContext) -> str:
    pod, seconds = ctx.state.pod or {}, billed_seconds(ctx)
    if not pod.get("id") or seconds is None:
        return "cost: nothing was rented"
    price = float(pod.get("price_per_hour") or 0.0)
    state = "up" if pod.get("terminated") else "up so far (NOT confirmed deleted)"
    line = f"cost: pod {state} {seconds:.0f}s at ${price:.2f}/h = about ${seconds / 3600 * price:.4f}"
    bill = ctx.state.outputs.get("cost")  # the cost stage's reading of the provider's bill, when it ran
    if bill and bill.get("actual_usd") is not None:
        return f"{line}; billed ${bill['actual_usd']:.4f}"
    if bill and bill.get("source"):
        return f"{line} (an estimate from the list price; {bill.get('note')})"
    return f"{line} (an estimate from the list price; RunPod's bill is what you pay)"


def _row(check: str, status: str, detail: str) -> dict:
    return {"check": check, "status": status, "detail": detail}


def _table(rows: list[dict]) -> list[str]:
    width = max(len(r["check"]) for r in rows)
    return [f"  {r['check']:<{width}}  {r['status']:<6}  {r['detail']}" for r in rows]


def _connection_rows(ctx: RunContext) -> list[dict]:
    """What the client already knows: how the host key was pinned, the watchdog's report, the closure."""
    rows = []
    endpoint = ctx.state.endpoint or {}
    if endpoint.get("kind") == "ssh":
        pinned = _pinned_key(ctx, endpoint)
        how = "announced in the pod's log" if endpoint.get("host_keys") else "first contact: the image announces none"
        alive = ctx.transport.exec("true") == 0
        rows.append(_row("ssh", OK if alive and pinned else FAIL,
                         f"{endpoint.get('user')}@{endpoint.get('host')}:{endpoint.get('port')}, host key "
                         f"{pinned or 'NOT pinned'} ({how})"))
    deadline = ctx.state.outputs.get("deadline")
    if deadline is not None:
        if deadline.get("armed"):
            rows.append(_row("deadline", OK, f"watchdog armed: {deadline.get('credential')} can read its pod "
                                             f"({deadline.get('read')}); deletes via {', '.join(deadline.get('methods') or [])}"))
        else:
            rows.append(_row("deadline", FAIL, f"watchdog NOT armed: {deadline.get('reason')}"))
    closure = ctx.state.outputs.get("closure")
    if closure:
        how = f"installed in {closure.get('seconds', 0):.0f}s" if closure.get("installed") else "found ready: installed nothing"
        rows.append(_row("closure", OK, f"{closure.get('venv')} ({how})"))
    return rows


def _pinned_key(ctx: RunContext, endpoint: dict) -> str | None:
    """`<type> SHA256:<fp>` of the key known_hosts holds for the endpoint (what later connections must match)."""
    known = ctx.run_dir / "ssh" / "known_hosts"
    host, port = endpoint.get("host"), endpoint.get("port")
    names = {f"[{host}]:{port}", str(host)} if port != 22 else {str(host)}
    if not known.is_file():
        return None
    for line in known.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 3 and names & set(parts[0].split(",")):
            digest = hashlib.sha256(base64.b64decode(parts[2])).digest()
            return f"{parts[1]} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"
    return None


def _pod_rows(ctx: RunContext) -> list[dict]:
    remote = posixpath.join(ctx.remote_dir, CHECKS_NAME)
    ctx.transport.put(CHECKS, remote)
    out: list[str] = []
    code = ctx.transport.exec(f"{shlex.quote(ctx.remote_python)} {shlex.quote(remote)}", on_line=out.append)
    rows = []
    for line in out:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a library's warning on the way
        if isinstance(row, dict) and {"check", "status", "detail"} <= set(row):
            rows.append(_row(str(row["check"]), str(row["status"]), str(row["detail"])))
    if code != 0 or not rows:
        tail = " | ".join(out[-5:])[-300:]
        rows.append(_row("pod checks", FAIL, f"{ctx.remote_python} {CHECKS_NAME} exited {code}: {tail}"))
    return rows


def _train_row(ctx: RunContext) -> dict:
    """A real, short training run through the same upload and train stages a full run uses."""
    from stages.train import Train
    from stages.upload import Upload

    steps = int(ctx.cfg.preflight.steps)
    full_cfg = ctx.cfg
    ctx.cfg = OmegaConf.merge(full_cfg, {"train": {"max_steps": steps}})
    try:
        Upload().run(ctx)
        Train().run(ctx)
    except (BudgetReached, Detached, Interrupted):
        raise  # not a failed check: the run stops (a FAIL row would let the pod bill on to its deadline)
    except LorapodError as exc:
        return _row("train", FAIL, f"{steps} steps of {full_cfg.model.id or full_cfg.model.name}: {exc.message}")
    finally:
        ctx.cfg = full_cfg
    result = _remote_json(ctx, posixpath.join(ctx.remote_dir, "out", "result.json"))
    loss = result.get("train_loss")
    return _row("train", OK, f"{result.get('steps', steps)} steps of {full_cfg.model.id or full_cfg.model.name} with "
                             f"{result.get('backend', '?')} on {result.get('device', '?')}"
                             + (f", train loss {loss:.4f}" if isinstance(loss, (int, float)) else ""))


def _remote_json(ctx: RunContext, path: str) -> dict:
    out: list[str] = []
    ctx.transport.exec(f"cat {shlex.quote(path)} 2>/dev/null", on_line=out.append)
    try:
        value = json.loads("\n".join(out))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
