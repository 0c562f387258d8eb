"""The persona from MetaHuman OS's persona/core.json (both layouts), the dataset.persona.name override, and the
messages for a missing or malformed file: from curation.prepare, and from a real run.py that must stop at
config validation, before prepare and before anything is rented."""
from __future__ import annotations

import json

import pytest

import curation
from engine.errors import DatasetError
from tests.conftest import run_lorapod
from tests.memtree import Tree, dataset, read_rows

# The shape of MetaHuman OS's persona/core.json.template (Greg-Aster/metahuman-os), filled in.
CORE = {
    "version": "1.0.0",
    "identity": {"name": "Greg", "humanName": "Greg Aster", "role": "Digital personality extension",
                 "aliases": ["[Nickname or preferred name]"]},
    "personality": {"communicationStyle": {"tone": ["dry", "warm", "curious"], "verbosity": "concise",
                                           "emphasis": "plain words"},
                    "traits": {"openness": 0.8}},
    "values": {"core": [{"value": "autonomy", "priority": 1}]},
}
STYLE = "Communication style: tone dry, warm, curious; verbosity concise; emphasis plain words."


def write_core(where, obj) -> None:
    where.mkdir(parents=True, exist_ok=True)
    (where / "core.json").write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")


def conversation_tree(tmp_path, layout="old") -> Tree:
    tree = Tree(tmp_path / "mh")
    tree.add(layout=layout, type="conversation", content="How did the council hearing go today?",
             response="Long, but they listened to the bit about the stone steps.")
    return tree


def prepared(tmp_path, ds) -> tuple[dict, list[dict]]:
    out = tmp_path / "out"
    manifest = curation.prepare(ds, 0.0, out)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    return manifest, read_rows(out / "train.jsonl")


def test_the_name_and_style_come_from_persona_core_json_at_the_root(tmp_path):
    tree = conversation_tree(tmp_path)
    write_core(tree.root / "persona", CORE)

    m, rows = prepared(tmp_path, dataset(tree.root, persona={"name": None}))

    prompt = f"You are Greg. Answer in your own voice, from your own memories. {STYLE}"
    assert m["persona"] == {"name": "Greg", "system_prompt": prompt, "style": STYLE,
                            "name_from": str(tree.root / "persona/core.json"),
                            "style_from": str(tree.root / "persona/core.json")}
    assert [r["messages"][0] for r in rows] == [{"role": "system", "content": prompt}]


def test_with_dataset_user_the_profile_core_json_is_read_not_the_root_one(tmp_path):
    tree = conversation_tree(tmp_path, layout="profile")  # profiles/alex/...
    write_core(tree.root / "persona", {"identity": {"name": "Root Owner"}})
    write_core(tree.root / "profiles/alex/persona", CORE | {"identity": {"name": "Alex Profile"}})

    m, rows = prepared(tmp_path, dataset(tree.root, user="alex", persona={"name": None}))

    assert m["persona"]["name"] == "Alex Profile"
    assert m["persona"]["name_from"] == str(tree.root / "profiles/alex/persona/core.json")
    assert rows[0]["messages"][0]["content"].startswith("You are Alex Profile.")
    assert STYLE in rows[0]["messages"][0]["content"]


def test_dataset_persona_name_overrides_the_file_and_the_style_still_comes_from_it(tmp_path):
    tree = conversation_tree(tmp_path)
    write_core(tree.root / "persona", CORE)
    tree.add(content="Walked the river trail before the rain came in.", type="observation")

    m, rows = prepared(tmp_path, dataset(tree.root, persona={"name": "Gregory"}))

    assert m["persona"]["name"] == "Gregory" and m["persona"]["name_from"] == "dataset.persona.name"
    assert m["persona"]["style_from"] == str(tree.root / "persona/core.json")
    assert {r["messages"][0]["content"] for r in rows} == {
        f"You are Gregory. Answer in your own voice, from your own memories. {STYLE}"}
    assert any(r["messages"][1]["content"].startswith("Gregory, what happened on") for r in rows)


def test_a_style_placeholder_puts_the_style_where_the_prompt_says(tmp_path):
    tree = conversation_tree(tmp_path)
    write_core(tree.root / "persona", {"identity": {"name": "Greg"},
                                       "personality": {"communicationStyle": {"tone": "blunt"}}})

    m, _ = prepared(tmp_path, dataset(tree.root, persona={"name": None, "system_prompt": "{style} You are {name}."}))

    assert m["persona"]["system_prompt"] == "Communication style: tone blunt. You are Greg."


def test_without_a_core_json_the_configured_name_is_used_and_no_style_is_added(tmp_path):
    tree = conversation_tree(tmp_path)
    m, rows = prepared(tmp_path, dataset(tree.root, persona={"name": "Alex"}))
    assert m["persona"] == {"name": "Alex", "system_prompt": "You are Alex. Answer in your own voice, from your "
                            "own memories.", "style": "", "name_from": "dataset.persona.name", "style_from": None}
    assert rows[0]["messages"][0]["content"] == m["persona"]["system_prompt"]


@pytest.mark.parametrize("core", [None, {"identity": {"name": "[Your Username]", "humanName": "[Your Full Name]"}},
                                  {"identity": {}}])
def test_no_name_anywhere_names_the_key_and_the_file(tmp_path, core):
    tree = conversation_tree(tmp_path)
    if core is not None:
        write_core(tree.root / "persona", core)
    with pytest.raises(DatasetError) as err:
        curation.prepare(dataset(tree.root, persona={"name": None}), 0.0, tmp_path / "out")
    text = str(err.value)
    assert "dataset.persona.name" in text and str(tree.root / "persona/core.json") in text
    assert not (tmp_path / "out").exists()


def test_human_name_stands_in_when_identity_name_is_missing(tmp_path):
    tree = conversation_tree(tmp_path)
    write_core(tree.root / "persona", {"identity": {"humanName": "Greg Aster"}})
    m, _ = prepared(tmp_path, dataset(tree.root, persona={"name": None}))
    assert m["persona"]["name"] == "Greg Aster" and m["persona"]["style"] == ""


@pytest.mark.parametrize("content, says", [
    ('{"identity": {"name": "Greg"', "not JSON"),
    ("", "empty file"),
    ('["Greg"]', "a JSON list, not an object"),
    ('{"identity": "Greg"}', "`identity` is not an object"),
    ('{"identity": {"name": 7}}', "`identity.name` is not text"),
    ('{"identity": {"name": "G"}, "personality": {"communicationStyle": 3}}', "communicationStyle"),
])
def test_a_malformed_core_json_is_an_error_naming_the_file_even_with_a_name_set(tmp_path, content, says):
    tree = conversation_tree(tmp_path)
    write_core(tree.root / "persona", content)
    with pytest.raises(DatasetError) as err:
        curation.prepare(dataset(tree.root, persona={"name": "Alex"}), 0.0, tmp_path / "out")
    assert str(tree.root / "persona/core.json") in str(err.value) and says in str(err.value)


def test_a_run_without_name_or_core_json_stops_at_validation_naming_both(tmp_path, run_dir):
    tree = conversation_tree(tmp_path)
    run = run_lorapod("dataset=metahuman", f"dataset.path={tree.root}", run_dir=run_dir)
    assert run.proc.returncode == 2, run.output
    assert "dataset.persona.name:" in run.output and str(tree.root / "persona/core.json") in run.output
    assert run.summary["failed_stage"] == "config" and set(run.summary["stages"]) == {"config"}
    assert not (run_dir / "dataset").exists() and not (run_dir / "pod").exists()


def test_a_run_finds_the_name_in_core_json_and_records_it(tmp_path, run_dir):
    tree = conversation_tree(tmp_path)
    write_core(tree.root / "persona", CORE)
    run = run_lorapod("pipeline=prepare", "dataset=metahuman", f"dataset.path={tree.root}", "train.eval_fraction=0",
                      run_dir=run_dir)
    assert run.proc.returncode == 0, run.output
    manifest = json.loads((run_dir / "dataset/manifest.json").read_text())
    assert manifest["persona"]["name"] == "Greg" and STYLE in manifest["persona"]["system_prompt"]


def test_a_malformed_core_json_or_a_nameless_jsonl_stops_a_run_at_validation(tmp_path, run_dir):
    tree = conversation_tree(tmp_path)
    write_core(tree.root / "persona", '{"identity": ')
    run = run_lorapod("dataset=metahuman", f"dataset.path={tree.root}", "dataset.persona.name=Alex", run_dir=run_dir)
    assert run.proc.returncode == 2, run.output
    assert f"{tree.root / 'persona/core.json'} is not a readable MetaHuman OS persona file" in run.output
    assert set(run.summary["stages"]) == {"config"}

    rows = tmp_path / "chats.jsonl"
    rows.write_text('{"instruction": "Hi there, how are you?", "output": "Fine, thanks for asking."}\n')
    run = run_lorapod("dataset=jsonl", f"dataset.path={rows}", "dataset.persona.name=null", run_dir=tmp_path / "r2")
    assert run.proc.returncode == 2, run.output
    assert "dataset.persona.name: is required with dataset.source=jsonl" in run.output
