"""python -m engine.adapters list|show ID|promote ID|rollback|remove ID [--path DIR] [--json]

Tables for people, --json for scripts. --path defaults to `adapters`, the default registry.path, relative to the
folder you run it from (like run.py's runs/). Nothing is deleted without asking: `remove` asks y/N on a terminal
and needs --yes otherwise; it drops the record only, never the run folder.
"""
from __future__ import annotations

import argparse
import json
import sys

from engine.adapters import store
from engine.adapters.store import Registry, RegistryError
from engine.schema import RegistryConfig

COLUMNS = ("id", "status", "eval before", "eval after", "model", "created", "reason")


def _loss(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _row(e: dict) -> tuple[str, ...]:
    reason = e.get("reason") or ""
    return (e["id"], ("* " if e.get("status") == store.ACTIVE else "  ") + str(e.get("status")),
            _loss(e.get("eval_loss_before")), _loss(e.get("eval_loss_after")),
            str((e.get("base_model") or {}).get("name")), (e.get("created_at") or "")[:19].replace("T", " "),
            reason if len(reason) <= 60 else reason[:57] + "...")


def table(rows: list[tuple[str, ...]], header: tuple[str, ...] = COLUMNS) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def show(e: dict) -> str:
    cost = e.get("cost") or {}
    ds = e.get("dataset") or {}
    lines = [f"adapter    {e['id']}", f"status     {e.get('status')}: {e.get('reason')}",
             f"created    {e.get('created_at')}",
             f"base model {(e.get('base_model') or {}).get('name')} ({(e.get('base_model') or {}).get('id')})",
             f"eval loss  {_loss(e.get('eval_loss_before'))} -> {_loss(e.get('eval_loss_after'))}",
             f"dataset    train {ds.get('train_sha256')}", f"           eval  {ds.get('eval_sha256')}",
             f"cost       estimate ${cost.get('estimate_usd')}, actual "
             + ("unknown" if cost.get("actual_usd") is None else f"${cost['actual_usd']}"),
             f"run folder {e.get('run_dir')}", "files"]
    lines += [f"  {rel}  {m['bytes']:,} bytes  sha256 {m['sha256']}" for rel, m in sorted((e.get("files") or {}).items())]
    lines.append("history")
    lines += [f"  {h.get('at')}  {h.get('action')} by {h.get('by')}: {h.get('reason')}" for h in e.get("history", [])]
    return "\n".join(lines)


def _confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise RegistryError("remove needs a confirmation and there is no terminal to ask on",
                            "pass --yes to remove without asking")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _common(default) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--path", default=RegistryConfig.path if default is None else default,
                        help=f"the registry folder (default: {RegistryConfig.path}, relative to the current folder)")
    common.add_argument("--json", action="store_true", default=False if default is None else default,
                        help="print JSON for scripts instead of a table")
    return common


def parser() -> argparse.ArgumentParser:
    # --path and --json may stand before or after the subcommand. The subcommands' copies default to SUPPRESS:
    # a real default there would overwrite what was typed before the subcommand (argparse fills a subparser's
    # defaults into the same namespace after the top level parsed), and `--path R rollback` would act on ./adapters.
    p = argparse.ArgumentParser(prog="python -m engine.adapters", description=__doc__.split("\n\n")[1],
                                parents=[_common(None)])
    common = _common(argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", parents=[common], help="every adapter, oldest first; * marks the active one")
    sub.add_parser("show", parents=[common], help="one adapter in full").add_argument("id")
    pr = sub.add_parser("promote", parents=[common], help="make an adapter active, whatever the gate said")
    pr.add_argument("id")
    rb = sub.add_parser("rollback", parents=[common], help="the active adapter steps down; the previous one returns")
    for s in (pr, rb):
        s.add_argument("--reason", default="", help="why, for the history")
    rm = sub.add_parser("remove", parents=[common], help="drop a record (asks first; never deletes the run folder)")
    rm.add_argument("id")
    rm.add_argument("--yes", action="store_true", help="do not ask (for scripts)")
    rm.add_argument("--force", action="store_true", help="also remove the active adapter, leaving none active")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    registry = Registry(args.path)
    out = sys.stdout
    try:
        if args.command == "list":
            entries = registry.entries()
            if args.json:
                out.write(json.dumps(entries, indent=2) + "\n")
            elif not entries:
                out.write(f"no adapters in {registry.path}\n")
            else:
                out.write(table([_row(e) for e in entries]) + "\n")
            for file in registry.unreadable():  # stderr: --json stays parseable
                sys.stderr.write(f"warning: {file} is not a readable record (the gate activates nothing while it "
                                 "is there): restore it from a backup, or move it out of the folder\n")
        elif args.command == "show":
            entry = registry.get(args.id)
            out.write((json.dumps(entry, indent=2) if args.json else show(entry)) + "\n")
        elif args.command == "promote":
            replaced = store.promote(registry, args.id, args.reason or "promoted by hand")
            _report(args, {"active": args.id, "replaced": replaced["id"] if replaced else None},
                    f"{args.id} is now active" + (f" (was {replaced['id']})" if replaced else ""))
        elif args.command == "rollback":
            gone, back = store.rollback(registry, args.reason or "rolled back by hand")
            _report(args, {"active": back["id"], "rolled_back": gone["id"]},
                    f"rolled back: {back['id']} is active again, {gone['id']} is rolled_back")
        elif args.command == "remove":
            entry = registry.get(args.id)
            if not _confirm(f"remove the record of {args.id} ({entry.get('status')})? "
                            f"Its run folder {entry.get('run_dir')} stays.", args.yes):
                out.write("nothing removed\n")
                return 1
            store.remove(registry, args.id, force=args.force)
            _report(args, {"removed": args.id, "run_dir": entry.get("run_dir")},
                    f"removed {args.id} from {registry.path}; its run folder {entry.get('run_dir')} is untouched")
    except RegistryError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


def _report(args, data: dict, text: str) -> None:
    sys.stdout.write((json.dumps(data) if args.json else text) + "\n")


if __name__ == "__main__":
    sys.exit(main())
