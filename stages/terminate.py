"""terminate: delete the pod. Always runs: after success, failure, Ctrl-C and SIGTERM."""
from __future__ import annotations

from loguru import logger

from engine.context import RunContext
from engine.errors import ProviderError
from engine.providers.base import Pod
from engine.stage import BaseStage


def terminate_pod(ctx: RunContext, pod: Pod) -> None:
    while ctx.closers:
        ctx.closers.pop()()
    ctx.state.mark("delete_sent")
    try:
        ctx.provider.terminate(pod)
    except Exception as exc:
        manual = getattr(ctx.provider, "manual_terminate_hint", lambda p: "delete it in the provider's console")(pod)
        raise ProviderError(f"COULD NOT DELETE POD {pod.id} ({pod.name}): it may still be billing. {exc}",
                            f"finish the job yourself: {manual}") from exc
    finally:
        _close_transport(ctx)
    ctx.state.pod["terminated"] = True
    ctx.state.mark("pod_terminated")
    ctx.state.outputs["overhead"] = overhead(ctx)
    ctx.save()
    logger.info(f"pod {pod.id} terminated")


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


class Terminate(BaseStage):
    always = True

    def run(self, ctx: RunContext) -> None:
        pod = ctx.state.pod
        if not pod:
            logger.info("no pod to terminate")
            return
        if pod.get("terminated"):
            logger.info(f"pod {pod['id']} already terminated")
            return
        from engine.providers.base import current_pod

        terminate_pod(ctx, current_pod(ctx))
