"""terminate: delete the pod. Always runs: after success, failure, Ctrl-C and SIGTERM.

The work is engine.teardown's: the runner needs the same guarantee when a pipeline lists no terminate stage.
"""
from __future__ import annotations

from engine.context import RunContext
from engine.stage import BaseStage
from engine.teardown import terminate_run


class Terminate(BaseStage):
    always = True

    def run(self, ctx: RunContext) -> None:
        terminate_run(ctx)
