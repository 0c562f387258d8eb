"""The layers: stages use the engine; the engine knows no stage (DESIGN.md, Layout)."""
from __future__ import annotations

import ast

from engine.context import PROJECT_ROOT


def _imported_modules(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_engine_imports_no_stage():
    offenders = {str(path.relative_to(PROJECT_ROOT)): sorted(m for m in _imported_modules(path)
                                                             if m == "stages" or m.startswith("stages."))
                 for path in (PROJECT_ROOT / "engine").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}
