"""build: make sure the pod's image exists. Only images built from remote_image/ need it."""
from __future__ import annotations

from loguru import logger

from engine.context import RunContext
from engine.stage import BaseStage


class Build(BaseStage):
    def run(self, ctx: RunContext) -> None:
        if ctx.provider.name == "local":
            logger.info("nothing to build: provider=local trains with this machine's interpreter, not an image")
            return
        logger.info(f"nothing to build: provider={ctx.provider.name} uses the machine as it is")
