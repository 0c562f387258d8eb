"""register: put the adapter this run brought home into the local registry (registry.path) and let the eval gate
(gate.min_improvement) decide whether it becomes the active one.

Not an always-stage: only a run whose stages all succeeded registers. A rejected adapter is recorded with the
reason and the run still succeeds (exit 0): training worked, the adapter just is not better. The active adapter
stays; `python -m engine.adapters promote ID` overrides the gate by hand.
"""
from __future__ import annotations

from pathlib import Path

from loguru import logger

from engine.adapters import gate, record
from engine.adapters.store import REJECTED, Registry, event
from engine.context import RunContext
from engine.stage import BaseStage


class Register(BaseStage):
    @staticmethod
    def check_config(cfg) -> list[tuple[str, str]]:
        problems = []
        if not str(cfg.registry.path or "").strip():
            problems.append(("registry.path", "must name a folder (default: adapters)"))
        if cfg.gate.min_improvement < 0:
            problems.append(("gate.min_improvement",
                             f"must be >= 0 (got {cfg.gate.min_improvement}): an adapter may not get worse"))
        return problems

    def run(self, ctx: RunContext) -> None:
        entry = record.build(ctx)
        if not entry["files"]:  # a pipeline without train/fetch (a probe-only run): nothing to judge
            logger.info(f"no adapter in {ctx.run_dir / 'adapter'}: nothing to register")
            ctx.state.outputs["adapter"] = None
            return
        registry = Registry(Path(ctx.cfg.registry.path))
        with registry.locked():  # the gate compares with the active adapter: nobody may change it meanwhile
            active = registry.active()
            unreadable = registry.unreadable()
            if unreadable:  # the active adapter's record may be among them: activating now could make two
                passed, reason = False, (f"the registry holds {len(unreadable)} unreadable record(s) ("
                                         f"{', '.join(str(f) for f in unreadable[:3])}): restore or move them out, "
                                         f"then python -m engine.adapters promote {entry['id']} if it should be active")
            else:
                passed, reason = gate.decide(entry, active, float(ctx.cfg.gate.min_improvement))
            if passed:
                registry.activate(entry, "activated", reason)
            else:
                entry["status"], entry["reason"] = REJECTED, reason
                entry["history"].append(event("rejected", reason))
                registry.put(entry)
        ctx.state.outputs["adapter"] = {"id": entry["id"], "status": entry["status"], "reason": reason,
                                        "registry": str(registry.path.resolve())}
        if passed:
            logger.success(f"adapter {entry['id']} is now active ({reason})")
        else:
            stays = f"active stays {active['id']}" if active else "no adapter is active"
            logger.warning(f"adapter {entry['id']} rejected: {reason}; {stays} (the run still succeeded)")
