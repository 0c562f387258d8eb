"""Deleting the run's pod: what the terminate stage does, and what the runner does when no stage did it.

Here, not in stages/terminate.py, because the runner guarantees it and the engine imports no stage.

A run that sent a create may own a pod it never heard about (the answer was lost to a timeout, a 5xx or a
Ctrl-C): a provider that can find pods by the run's unique name (`terminate_named`) is asked to delete every
one of them, not only the recorded pod.
"""
from __future__ import annotations

from loguru import logger

from engine.context import RunContext
from engine.errors import ProviderError
from engine.providers.base import Pod, current_pod

CREATE_SENT = "create_sent"  # state mark: a provider sent a create; a pod may exist even if none is recorded


def needs_terminate(ctx: RunContext) -> bool:
    """Whether a pod of this run may still be up: one is recorded and not deleted, or a create was sent and
    nothing swept the run's name since."""
    if "pod_terminated" in ctx.state.marks:
        return False
    pod = ctx.state.pod
    return bool(pod and not pod.get("terminated")) or CREATE_SENT in ctx.state.marks


def terminate_run(ctx: RunContext) -> None:
    """Delete the recorded pod and, where the provider can, every other pod carrying the run's name."""
    pod = ctx.state.pod
    if pod and pod.get("terminated"):
        logger.info(f"pod {pod['id']} already terminated")
        return
    if pod:
        terminate_pod(ctx, current_pod(ctx))
        return
    sweep = getattr(ctx.provider, "terminate_named", None)
    if CREATE_SENT not in ctx.state.marks or sweep is None:
        logger.info("no pod to terminate")
        return
    _close_closers(ctx)
    try:
        deleted = sweep(ctx.pod_name)
    except Exception as exc:
        raise ProviderError(f"COULD NOT CHECK FOR PODS NAMED {ctx.pod_name}: a create was sent, so one may be "
                            f"billing. {exc}", f"finish the job yourself: {_manual(ctx, None)}") from exc
    finally:
        _close_transport(ctx)
    ctx.state.mark("pod_terminated")
    ctx.save()
    if deleted:
        logger.warning(f"deleted pod(s) {', '.join(deleted)} named {ctx.pod_name} that the create never "
                       "handed us")
    else:
        logger.info(f"no pod named {ctx.pod_name} exists: nothing to terminate")


def terminate_pod(ctx: RunContext, pod: Pod) -> None:
    _close_closers(ctx)
    ctx.state.mark("delete_sent")
    try:
        ctx.provider.terminate(pod)
    except Exception as exc:
        raise ProviderError(f"COULD NOT DELETE POD {pod.id} ({pod.name}): it may still be billing. {exc}",
                            f"finish the job yourself: {_manual(ctx, pod)}") from exc
    finally:
        _close_transport(ctx)
    ctx.state.pod["terminated"] = True
    ctx.state.mark("pod_terminated")
    ctx.state.outputs["overhead"] = overhead(ctx)
    ctx.save()
    logger.info(f"pod {pod.id} terminated")


def _manual(ctx: RunContext, pod: Pod | None) -> str:
    hint = getattr(ctx.provider, "manual_terminate_hint", None)
    return hint(pod) if hint is not None else "delete it in the provider's console"


def let_go(ctx: RunContext) -> None:
    """A detached run leaves its pod training: stop the heartbeat and close the connection, delete nothing."""
    _close_closers(ctx)
    _close_transport(ctx)


def _close_closers(ctx: RunContext) -> None:
    while ctx.closers:
        ctx.closers.pop()()


def _close_transport(ctx: RunContext) -> None:
    if ctx.transport is not None:
        try:
            ctx.transport.close()
        except Exception as exc:  # a dead connection must not keep the pod alive
            logger.debug(f"closing the connection: {exc}")
        ctx.transport = None


def overhead(ctx: RunContext) -> dict:
    """Billed seconds we own: ready -> training launched (less upload), exited -> delete sent (less fetch)."""
    m, out = ctx.state.marks, ctx.state.outputs
    result = {}
    if "ready" in m and "train_launched" in m:
        result["ready_to_train_s"] = round(m["train_launched"] - m["ready"], 3)
        result["ready_to_train_excl_upload_s"] = round(result["ready_to_train_s"] - out.get("upload", {}).get("seconds", 0), 3)
    if "train_exited" in m and "delete_sent" in m:
        result["exit_to_delete_s"] = round(m["delete_sent"] - m["train_exited"], 3)
        result["exit_to_delete_excl_fetch_s"] = round(result["exit_to_delete_s"] - out.get("fetch", {}).get("seconds", 0), 3)
    return result
