"""Issue 13 parts 1, 2 and the install half of 6: the adapter registry, its eval gate, rollback, and the install
into a MetaHuman OS root. Real runs of run.py (tiny model on CPU), the real CLI in a subprocess."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from engine.adapters import gate
from engine.adapters.store import Registry, check_files, event
from engine.hashing import sha256_file
from stages.install import install
from tests.conftest import PYTHON, REPO, lorapod_env, run_lorapod
from tests.memtree import Tree, snapshot

USELESS = ("train.max_steps=1", "train.learning_rate=1e-12")


def cli(*args: str, registry: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "engine.adapters", *args, "--path", str(registry)], cwd=REPO,
                          capture_output=True, text=True, input=stdin, env=lorapod_env(), timeout=120)


def default_registry(default_run) -> Path:
    return default_run.run_dir.parent / "adapters"  # where tests.conftest points the default run's registry


@pytest.fixture(scope="module")
def useless(default_run, tmp_path_factory):
    """A run that learns nothing, registered after the default run (in a copy of its registry, so this module's
    promote/rollback/remove never touch what other tests read), with export.metahuman into a memory tree."""
    assert default_run.proc.returncode == 0, default_run.proc.stdout + default_run.proc.stderr
    base = tmp_path_factory.mktemp("useless")
    registry = base / "adapters"
    shutil.copytree(default_registry(default_run), registry)
    tree = Tree(base / "metahuman")
    for _ in range(3):
        tree.add()
    (base / "metahuman" / "out").mkdir()  # MetaHuman OS's own output folder, with something of its own in it
    (base / "metahuman" / "out" / "notes.txt").write_text("theirs\n")
    before = snapshot(tree.root)
    run = run_lorapod(*USELESS, f"registry.path={registry}", "export.metahuman=true",
                      f"export.metahuman_root={tree.root}", run_dir=base / "run")
    return {"run": run, "registry": registry, "root": tree.root, "before": before}


def test_the_default_local_run_becomes_the_active_adapter(default_run):
    adapter = default_run.summary["adapter"]
    assert adapter["status"] == "active", adapter
    assert f"adapter {adapter['id']} is now active (eval loss" in default_run.output
    entry = Registry(default_registry(default_run)).get(adapter["id"])
    assert entry["id"] == default_run.summary["run_id"] and entry["run_dir"] == str(default_run.run_dir)
    result = json.loads((default_run.run_dir / "result.json").read_text())
    assert entry["eval_loss_before"] == result["eval_loss_before"] > entry["eval_loss_after"] == result["eval_loss_after"]
    manifest = json.loads((default_run.run_dir / "dataset" / "manifest.json").read_text())
    assert entry["dataset"]["eval_sha256"] == manifest["sha256"]["eval.jsonl"]
    assert entry["dataset"]["train_sha256"] == manifest["sha256"]["train.jsonl"]
    assert entry["base_model"]["name"] == "tiny" and entry["config"]["lora"]["r"] > 0
    assert set(entry["cost"]) == {"estimate_usd", "actual_usd"}
    assert "adapter/adapter_model.safetensors" in entry["files"]
    for rel, meta in entry["files"].items():
        path = default_run.run_dir / rel
        assert meta == {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    assert [h["action"] for h in entry["history"]] == ["activated"]
    assert not (REPO / "adapters" / f"{adapter['id']}.json").exists()  # never the project's registry


def test_the_registry_holds_no_secret(default_run):
    from tests.conftest import DEFAULT_RUN_KEY

    for path in default_registry(default_run).glob("*.json"):
        assert DEFAULT_RUN_KEY not in path.read_text()


def test_a_useless_run_is_rejected_and_the_active_adapter_stays(useless, default_run):
    run = useless["run"]
    assert run.proc.returncode == 0, run.output  # rejected is not failed
    adapter = run.summary["adapter"]
    assert adapter["status"] == "rejected"
    assert "less than gate.min_improvement 0.01" in adapter["reason"] and "improved by 0.0000" in adapter["reason"]
    active_id = default_run.summary["adapter"]["id"]
    assert f"adapter {adapter['id']} rejected: " in run.output and f"active stays {active_id}" in run.output
    registry = Registry(useless["registry"])
    assert registry.active()["id"] == active_id
    assert registry.get(adapter["id"])["status"] == "rejected"


def test_a_smoke_run_on_another_base_model_leaves_the_user_s_active_adapter_alone(default_run, tmp_path):
    """The README's quick start (`python run.py`: tiny random model, sample memories) after a real Qwen3 adapter:
    registered, not activated; the Qwen3 one stays active (and so stays what export.metahuman installs)."""
    registry = tmp_path / "adapters"
    shutil.copytree(default_registry(default_run), registry)
    reg = Registry(registry)
    theirs = reg.active()
    theirs["base_model"] = dict(QWEN)  # as a `gpu=rtx5090 model=qwen3_8b` run would have registered it
    theirs["dataset"]["eval_sha256"] = "f" * 64  # their own memories: another eval split, so losses do not compare
    reg.put(theirs)

    run = run_lorapod(f"registry.path={registry}", run_dir=tmp_path / "run")
    assert run.proc.returncode == 0, run.output  # not activated is not failed
    adapter = run.summary["adapter"]
    assert adapter["status"] == "rejected", adapter
    assert f"a different base model than the active adapter {theirs['id']}'s (unsloth/Qwen3-8B (hub))" in \
        adapter["reason"] and "promote it by hand" in adapter["reason"]
    assert reg.active()["id"] == theirs["id"] and reg.get(theirs["id"])["history"] == theirs["history"]
    assert reg.get(adapter["id"])["history"][-1]["action"] == "rejected"


def test_install_copies_the_active_adapter_and_touches_nothing_else(useless, default_run):
    run, root = useless["run"], useless["root"]
    assert run.stage_status("install") == "succeeded", run.output
    active = Registry(useless["registry"]).active()
    installed = run.state["outputs"]["install"]
    assert run.summary["install"] == installed  # where it went, in the file people and scripts read
    assert installed["id"] == active["id"] == default_run.summary["adapter"]["id"]  # the active one, not this run's
    dest = Path(installed["path"])
    assert dest.parent == root / "out" / "adapters" and re.fullmatch(r"\d{4}-\d\d-\d\d", dest.name), dest
    assert sorted(p.relative_to(dest).as_posix() for p in (dest / "adapter").rglob("*")) == sorted(active["files"])
    for rel, meta in active["files"].items():
        assert sha256_file(dest / rel) == meta["sha256"]
    def theirs(tree: dict) -> dict:  # out/ itself gains a folder, so its mtime moves; what is in it must not
        return {k: v for k, v in tree.items() if k != "out" and not k.startswith("out/adapters")}

    assert theirs(snapshot(root)) == theirs(useless["before"]) and "out/notes.txt" in useless["before"]
    assert not list(dest.parent.glob(".*partial"))


def test_a_second_install_of_the_same_adapter_changes_nothing_and_another_one_gets_a_new_folder(useless, tmp_path):
    registry = Registry(useless["registry"])
    root = tmp_path / "mh"
    active = registry.active()
    first = install(active, root)
    assert install(active, root) == first
    other = next(e for e in registry.entries() if e["id"] != active["id"])
    second = install(other, root)
    assert second != first and second.name.startswith(first.name) and second.name > first.name
    assert sha256_file(first / "adapter" / "adapter_model.safetensors") == \
           active["files"]["adapter/adapter_model.safetensors"]["sha256"]


def test_promote_and_rollback_record_who_when_why(useless, tmp_path):
    registry = tmp_path / "adapters"
    shutil.copytree(useless["registry"], registry)
    reg = Registry(registry)
    first, rejected = reg.active()["id"], useless["run"].summary["adapter"]["id"]

    promoted = cli("promote", rejected, "--reason", "I like it", "--json", registry=registry)
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(promoted.stdout) == {"active": rejected, "replaced": first}
    assert reg.active()["id"] == rejected and reg.get(first)["status"] == "retired"
    last = reg.get(rejected)["history"][-1]
    assert last["action"] == "promoted" and last["reason"] == "I like it" and last["by"] and last["at"]

    back = cli("rollback", "--reason", "sounded off", registry=registry)
    assert back.returncode == 0, back.stderr
    assert f"{first} is active again" in back.stdout
    assert reg.active()["id"] == first and reg.get(rejected)["status"] == "rolled_back"
    assert reg.get(rejected)["history"][-1]["reason"] == "sounded off"
    assert reg.get(first)["history"][-1]["action"] == "restored"

    again = cli("rollback", registry=registry)  # nothing was active before `first`
    assert again.returncode == 1 and "no adapter that was active before" in again.stderr
    assert reg.active()["id"] == first


def test_remove_asks_and_never_deletes_the_run_folder(useless, tmp_path):
    registry = tmp_path / "adapters"
    shutil.copytree(useless["registry"], registry)
    reg = Registry(registry)
    active, rejected = reg.active(), reg.get(useless["run"].summary["adapter"]["id"])

    no_tty = cli("remove", rejected["id"], registry=registry, stdin="y\n")  # stdin is a pipe, not a terminal
    assert no_tty.returncode == 1 and "--yes" in no_tty.stderr
    assert reg.get(rejected["id"])

    refused = cli("remove", active["id"], "--yes", registry=registry)
    assert refused.returncode == 1 and "is the active adapter" in refused.stderr and reg.active()["id"] == active["id"]

    done = cli("remove", rejected["id"], "--yes", registry=registry)
    assert done.returncode == 0, done.stderr
    assert [e["id"] for e in reg.entries()] == [active["id"]]
    assert not check_files(rejected)  # its run folder and adapter are all still there


def test_path_and_json_typed_before_the_command_are_kept(useless, tmp_path):
    """`--path R promote|rollback|remove` acts on R, not on ./adapters of the folder it was typed in."""
    registry = tmp_path / "adapters-elsewhere"
    shutil.copytree(useless["registry"], registry)
    here = tmp_path / "cwd"  # where a dropped --path would send it: an empty folder, so a slip shows as "no adapter"
    here.mkdir()
    reg = Registry(registry)
    first, rejected = reg.active()["id"], useless["run"].summary["adapter"]["id"]

    def first_cli(*args: str) -> subprocess.CompletedProcess:
        env = lorapod_env(PYTHONPATH=str(REPO))
        return subprocess.run([PYTHON, "-m", "engine.adapters", "--path", str(registry), *args], cwd=here,
                              capture_output=True, text=True, env=env, timeout=120)

    listed = first_cli("--json", "list")
    assert listed.returncode == 0, listed.stderr
    assert [e["id"] for e in json.loads(listed.stdout)] == [e["id"] for e in reg.entries()]
    promoted = first_cli("promote", rejected)
    assert promoted.returncode == 0, promoted.stderr
    assert reg.active()["id"] == rejected
    back = first_cli("rollback")
    assert back.returncode == 0, back.stderr
    assert reg.active()["id"] == first and reg.get(rejected)["status"] == "rolled_back"
    removed = first_cli("remove", rejected, "--yes")
    assert removed.returncode == 0, removed.stderr
    assert [e["id"] for e in reg.entries()] == [first]
    assert not (here / "adapters").exists()


def test_list_and_show_for_people_and_json_for_scripts(useless):
    registry = useless["registry"]
    reg = Registry(registry)
    ids = [e["id"] for e in reg.entries()]
    table = cli("list", registry=registry)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["id", "status"] and len(lines) == 2 + len(ids)
    assert any(line.startswith(reg.active()["id"]) and "* active" in line for line in lines)
    assert any("rejected" in line for line in lines)
    listed = json.loads(cli("list", "--json", registry=registry).stdout)
    assert [e["id"] for e in listed] == ids
    shown = cli("show", ids[-1], registry=registry).stdout
    assert "adapter/adapter_model.safetensors" in shown and "history" in shown
    assert json.loads(cli("show", ids[-1], "--json", registry=registry).stdout) == reg.get(ids[-1])
    missing = cli("show", "20990101-000000-dead", registry=registry)
    assert missing.returncode == 1 and "no adapter 20990101-000000-dead" in missing.stderr
    bad = cli("show", "../../etc/passwd", registry=registry)
    assert bad.returncode == 1 and "is not an adapter id" in bad.stderr


def test_metahuman_install_without_a_root_is_a_config_error(run_dir):
    run = run_lorapod("export.metahuman=true", run_dir=run_dir)
    assert run.proc.returncode == 2, run.output
    assert "export.metahuman_root" in run.output and run.summary["stages"]["config"]["status"] == "failed"
    assert run.state["pod"] is None


# The gate's rules on their own: the numbers decide, each rejection says which.
TINY = {"name": "tiny", "id": None, "source": "random"}
QWEN = {"name": "qwen3_8b", "id": "unsloth/Qwen3-8B", "source": "hub"}


def entry(before, after, eval_sha="e1", id="new", base_model=TINY):
    return {"id": id, "eval_loss_before": before, "eval_loss_after": after, "dataset": {"eval_sha256": eval_sha},
            "base_model": base_model}


@pytest.mark.parametrize("before, after, active, passes, words", [
    (3.0, 2.5, None, True, "improved by 0.5000"),
    (3.0, 2.995, None, False, "less than gate.min_improvement"),
    (3.0, 3.2, None, False, "improved by -0.2000"),
    (None, 2.5, None, False, "no eval loss"),
    (3.0, float("nan"), None, False, "no eval loss"),
    (3.0, 2.5, entry(3.0, 2.4, id="old"), False, "worse than the active adapter old's 2.4000 on the same eval split"),
    (3.0, 2.5, entry(3.0, 2.6, id="old"), True, "not worse than old's"),
    (3.0, 2.5, entry(3.0, 2.0, eval_sha="e2", id="old"), True, "improved by 0.5000"),  # other split: not compared
    # another base model never replaces the active adapter by itself, however much it learnt
    (3.0, 1.0, {**entry(3.0, 2.9, eval_sha="e2", id="old"), "base_model": QWEN}, False,
     "a different base model than the active adapter old's (unsloth/Qwen3-8B (hub)): promote it by hand"),
    (3.0, 1.0, {**entry(3.0, 2.9, id="old"), "base_model": QWEN}, False, "a different base model"),
    (3.0, 2.995, {**entry(3.0, 2.9, id="old"), "base_model": QWEN}, False, "less than gate.min_improvement"),
])
def test_the_gate(before, after, active, passes, words):
    ok, reason = gate.decide(entry(before, after), active, 0.01)
    assert ok is passes and words in reason, reason


def test_a_corrupt_record_in_the_registry_activates_nothing(default_run, tmp_path):
    """The active adapter's record cut short (a full disk, a hand edit): the gate cannot see it, so a new adapter
    must not become a second active one; it is registered as rejected, naming the file, and the run succeeds."""
    registry = tmp_path / "adapters"
    shutil.copytree(default_registry(default_run), registry)
    record = registry / f"{Registry(registry).active()['id']}.json"
    cut = record.read_text()[:40]
    record.write_text(cut)

    run = run_lorapod(f"registry.path={registry}", run_dir=tmp_path / "run")
    assert run.proc.returncode == 0, run.output
    adapter = run.summary["adapter"]
    assert adapter["status"] == "rejected" and f"1 unreadable record(s) ({record})" in adapter["reason"], adapter
    assert f"promote {adapter['id']}" in adapter["reason"]
    assert Registry(registry).active() is None and record.read_text() == cut


def _register_fake(args) -> str:
    """One process of a sweep registering at once (records only: the gate and the lock are what is tested)."""
    path, n = args
    reg = Registry(path)
    new = {**entry(3.0, 3.0 - 0.1 * (n + 1), id=f"20260101-000000-{n:04x}"), "created_at": f"2026-01-01T00:00:{n:02d}Z",
           "status": None, "history": []}
    with reg.locked():
        ok, reason = gate.decide(new, reg.active(), 0.01)
        if ok:
            reg.activate(new, "activated", reason)
        else:
            new["status"] = "rejected"
            new["history"].append(event("rejected", reason))
            reg.put(new)
    return new["status"]


def test_runs_registering_at_once_leave_one_active_and_every_record_whole(tmp_path):
    with ProcessPoolExecutor(4) as pool:
        statuses = list(pool.map(_register_fake, [(tmp_path, n) for n in range(12)]))
    reg = Registry(tmp_path)
    entries = reg.entries()
    assert len(entries) == 12 and "active" in statuses
    assert [e["id"] for e in entries if e["status"] == "active"] == [reg.active()["id"]]
    # the best one wins whatever the order: each activation had to beat the active one on the same split
    assert reg.active()["id"] == "20260101-000000-000b"
    assert not list(tmp_path.glob(".*.tmp"))


def test_remove_on_a_terminal_asks_y_n_and_no_keeps_the_record(useless, tmp_path):
    import os
    import pty

    registry = tmp_path / "adapters"
    shutil.copytree(useless["registry"], registry)
    rejected = useless["run"].summary["adapter"]["id"]
    for answer, kept in (("n", True), ("", True), ("y", False)):
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen([PYTHON, "-m", "engine.adapters", "remove", rejected, "--path", str(registry)],
                                    cwd=REPO, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=lorapod_env())
            os.write(master, f"{answer}\n".encode())
            out, err = proc.communicate(timeout=120)
        finally:
            os.close(master)
            os.close(slave)
        assert "[y/N]" in out, (out, err)
        assert (registry / f"{rejected}.json").exists() is kept, (answer, out, err)
        assert proc.returncode == (1 if kept else 0), (answer, out, err)


def test_install_brings_the_run_s_export_files_along_and_refuses_a_changed_adapter(useless, tmp_path):
    from engine.errors import StageError

    active = Registry(useless["registry"]).active()
    run_dir = tmp_path / "run"  # a copy of the run folder, with what an Ollama export leaves in it
    shutil.copytree(Path(active["run_dir"]) / "adapter", run_dir / "adapter")
    (run_dir / "export").mkdir()
    (run_dir / "export" / "Modelfile").write_text("FROM base\nADAPTER ./adapter.gguf\n")
    (run_dir / "export" / "adapter.gguf").write_bytes(b"GGUF" + bytes(64))
    entry = {**active, "run_dir": str(run_dir)}
    dest = install(entry, tmp_path / "mh")
    assert (dest / "Modelfile").read_text().startswith("FROM base")
    assert sha256_file(dest / "adapter.gguf") == sha256_file(run_dir / "export" / "adapter.gguf")
    marker = json.loads((dest / "lorapod-install.json").read_text())
    assert marker["id"] == active["id"] and set(marker["files"]) == {*active["files"], "Modelfile", "adapter.gguf"}

    (run_dir / "adapter" / "adapter_model.safetensors").write_bytes(b"not the adapter that was judged")
    with pytest.raises(StageError, match="changed since it was registered"):
        install(entry, tmp_path / "mh2")
    assert not (tmp_path / "mh2").exists()


def test_every_benchmark_that_registers_an_adapter_uses_a_registry_of_its_own():
    """A benchmark's tiny or 0.6B adapter must not become (or retire) the user's active adapter in ./adapters.
    A script that runs run.py beyond pipeline=prepare (no register stage) or --help/--cfg must set registry.path."""
    offenders = []
    no_stage = {"bench_startup.py"}  # runs run.py only with --help and --cfg job (import_profile's *args): no stage
    for script in sorted(p for p in (REPO / "bench").glob("*.py") if p.name not in no_stage):
        text = script.read_text()
        calls = [m.group(0) for m in re.finditer(r'\[[^\[\]]*"run\.py"[^\]]*\]', text)]
        registers = [c for c in calls if not any(w in c for w in ("pipeline=prepare", '"--help"', '"--cfg"'))]
        if registers and "registry.path=" not in text:
            offenders.append(script.name)
    assert not offenders, offenders
    assert "registry.path=" in (REPO / "bench" / "bench_run.py").read_text()  # the check sees what it must see


def _compose(*overrides: str):
    from engine.compose import jobs

    return jobs(list(overrides), multirun=False)[0][1]


def _fake_entry(tmp_path: Path) -> dict:
    """A record whose adapter files exist and match (what install checks); the training is not what is tested."""
    run_dir = tmp_path / "run"
    (run_dir / "adapter").mkdir(parents=True)
    (run_dir / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    file = run_dir / "adapter" / "adapter_model.safetensors"
    return {"id": "20260101-000000-0001", "run_dir": str(run_dir),
            "files": {"adapter/adapter_model.safetensors": {"sha256": sha256_file(file), "bytes": file.stat().st_size}}}


def test_a_dataset_path_into_the_episodic_tree_installs_at_the_root_not_among_the_memories(tmp_path):
    from stages.install import Install, metahuman_root

    tree = Tree(tmp_path / "metahuman")
    tree.add()
    episodic = tree.root / "memory" / "episodic"
    cfg = _compose("dataset=metahuman", f"dataset.path={episodic}", "dataset.persona.name=Alex",
                   "export.metahuman=true")
    assert Install.check_config(cfg) == []
    assert metahuman_root(cfg) == tree.root  # the root persona.json is read from, too
    before = snapshot(episodic)
    dest = install(_fake_entry(tmp_path), metahuman_root(cfg))
    assert dest.parent == tree.root / "out" / "adapters"
    assert snapshot(episodic) == before


@pytest.mark.parametrize("key", ["export.metahuman_root", "dataset.path"])
def test_an_install_root_inside_an_episodic_folder_is_refused_before_anything_runs(tmp_path, key):
    from engine.errors import StageError
    from stages.install import Install

    tree = Tree(tmp_path / "metahuman")
    tree.add(layout="new")
    inside = tree.root / "profiles" / "alex" / "memory" / "episodic"  # an episodic folder not under <root>/memory
    if key == "dataset.path":  # curation reads any folder named episodic whole; the install may not go there
        inside = tmp_path / "episodic"
        shutil.copytree(tree.root / "profiles" / "alex" / "memory" / "episodic", inside)
        overrides = [f"dataset.path={inside}"]
    else:
        overrides = [f"dataset.path={tree.root}", f"export.metahuman_root={inside / '2025'}"]
    cfg = _compose("dataset=metahuman", *overrides, "dataset.persona.name=Alex", "export.metahuman=true")
    problems = Install.check_config(cfg)
    assert len(problems) == 1 and problems[0][0] == key, problems
    assert "is inside the episodic memory folder" in problems[0][1] and "export.metahuman_root" in problems[0][1]
    before = snapshot(inside)
    with pytest.raises(StageError, match="inside the episodic memory folder"):
        install(_fake_entry(tmp_path), inside)
    assert snapshot(inside) == before

    run = run_lorapod("dataset=metahuman", *overrides, "dataset.persona.name=Alex", "export.metahuman=true",
                      run_dir=tmp_path / "run-refused")
    assert run.proc.returncode == 2, run.output
    assert f"{key}: " in run.output and "inside the episodic memory folder" in run.output
    assert run.state["pod"] is None and snapshot(inside) == before


@pytest.mark.parametrize("content", ['{"id": "20260101-000000-0001", "status": "act', '["not", "a", "record"]'])
def test_a_corrupt_record_is_named_not_a_traceback(tmp_path, content):
    registry = tmp_path / "adapters"
    registry.mkdir()
    record = registry / "20260101-000000-0001.json"
    record.write_text(content)  # a record cut short (a full disk, a hand edit) or something else entirely
    for args in (("show", record.stem), ("promote", record.stem), ("remove", record.stem, "--yes")):
        done = cli(*args, registry=registry)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stderr and f"error: {record} is not a " in done.stderr, done.stderr
        assert "restore it from a backup, or move it out of the folder" in done.stderr
    listed = cli("list", registry=registry)
    assert listed.returncode == 0 and f"warning: {record} is not a readable record" in listed.stderr, listed.stderr
    assert record.read_text() == content  # nothing rewritten or removed
