"""deploy: ask the provider for a pod. Its id is in state.json the moment the provider hands it out."""
from __future__ import annotations

from dataclasses import asdict

from loguru import logger

from engine.context import RunContext
from engine.providers.base import PodSpec
from engine.stage import BaseStage


class Deploy(BaseStage):
    rents = True  # a pipeline with this stage needs the provider's credentials (engine.stage.pipeline_rents)

    def run(self, ctx: RunContext) -> None:
        spec = PodSpec(name=ctx.pod_name, env=dict(ctx.state.outputs.get("pod_env", {})))
        pod = ctx.provider.create(spec)
        ctx.state.pod = asdict(pod)
        ctx.state.mark("pod_created")
        ctx.save()
        where = f" ({pod.gpu}, {pod.cloud}, ${pod.price_per_hour:.2f}/h)" if pod.cloud else ""
        logger.info(f"pod {pod.id} created{where}")
