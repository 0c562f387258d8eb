"""curation.prepare over generated memory trees: every reason counted, the manifest, layouts, conversion, split."""
import hashlib
import json

import pytest

import curation
from curation.parallel import CHUNK
from curation.reasons import REASONS
from engine.errors import DatasetError
from tests.memtree import Tree, dataset, read_rows, sentence, snapshot

ISSUE_REASONS = {"malformed", "not_allowed_type", "too_short", "no_tags_or_entities", "no_consent", "no_response",
                 "out_of_range", "low_importance", "empty_after_cleaning", "duplicate", "near_duplicate", "over_cap"}
LONG = " ".join(sentence(900 + i)[:-1] for i in range(4))  # 48 distinct words


def prepare(tmp_path, ds, eval_fraction=0.0):
    out = tmp_path / "out"
    manifest = curation.prepare(ds, eval_fraction, out)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    return manifest, read_rows(out / "train.jsonl"), read_rows(out / "eval.jsonl")


@pytest.fixture
def tree(tmp_path):
    return Tree(tmp_path / "mh")


def test_every_reason_is_counted_once_and_the_funnel_adds_up(tmp_path, tree):
    tree.add(content="A good observation about the river trail at dawn.", importance=0.6)
    tree.add(type="conversation", content='Me: "How was the hearing?"', response="Long, but the council listened.",
             importance=0.8)
    tree.add(type="dream", content="I dreamt the library shelves held seeds.", tags=[], entities=[],  # exempt
             importance=0.3)  # the lowest score of the five left: over the cap of 4
    tree.add(content=LONG, importance=0.9)
    tree.add(content=LONG.upper() + "!")  # newer: the exact duplicate that stays
    tree.add(content=sentence(50, 40), importance=0.9)
    tree.add(content=sentence(50, 40).replace(sentence(50, 40).split()[20], "changed"))  # newer near duplicate
    tree.raw("memory/episodic/2025/broken.json", b'{"id": "x", "content": ')
    tree.add(content="I would rather this stayed private forever.", metadata={"trainingConsent": False})
    tree.add(type="action", content="Ran the organizer agent over the inbox.")
    tree.add(content="Something from long before the range starts.", hours=-24 * 400)
    tree.add(content="A minor note that barely mattered to me.", importance=0.05)
    tree.add(content="An untagged memory, never organised.", tags=[], entities=[])
    tree.add(content="ok")
    tree.add(type="conversation", content="Are you there? Anyone?", response=...)
    tree.add(content="<think>The user wants a memory; I will make one up.</think>")
    ds = dataset(tree.root, filters={"since": "2025-01-01", "min_importance": 0.1, "max_examples": 4})

    m, train, _ = prepare(tmp_path, ds)

    assert set(m["dropped"]) == ISSUE_REASONS == set(REASONS)
    assert m["dropped"] == {r: 1 for r in REASONS}
    assert m["read"] == 16 == m["kept"] + sum(m["dropped"].values())
    assert m["kept"] == len(train) == 4
    assert [b["path"] for b in m["malformed"]] == [str(tree.root / "memory/episodic/2025/broken.json")]
    texts = [r["messages"][-1]["content"] for r in train]
    assert LONG.upper() + "!" in texts and LONG not in texts  # the newer of the two duplicates
    assert "changed" in texts[-1]  # the newer of the two near duplicates
    assert "Long, but the council listened." in texts
    assert "I dreamt the library shelves held seeds." not in texts


def test_the_manifest_records_config_reference_date_and_file_hashes(tmp_path, tree):
    for i in range(30):
        tree.add(hours=i * 24)
    ds = dataset(tree.root, filters={"min_importance": 0.25})

    m, train, evals = prepare(tmp_path, ds, eval_fraction=0.3)

    assert m["source"] == {"kind": "metahuman", "path": str(tree.root), "user": None}
    assert m["config"]["dataset"]["filters"]["min_importance"] == 0.25
    assert m["config"]["train"] == {"eval_fraction": 0.3}
    assert m["reference_date"] == "2025-06-30T08:00:00Z"  # the newest memory
    assert (m["train"], m["eval"]) == (len(train), len(evals)) and len(train) + len(evals) == 30
    for name in ("train.jsonl", "eval.jsonl"):
        assert m["sha256"][name] == hashlib.sha256((tmp_path / "out" / name).read_bytes()).hexdigest()


def test_both_layouts_every_profile_or_one_user(tmp_path, tree):
    old = tree.add(layout="old")
    alex = tree.add(layout="profile", user="alex", category="reflections", type="reflection")
    bea = [tree.add(layout="profile", user="bea"), tree.add(layout="profile", user="bea", category="dreams")]

    def sources(**kw):
        _, train, _ = prepare(tmp_path, dataset(**kw))
        return sorted(r["metadata"]["source_sha256"][0] for r in train)

    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in [old, alex, *bea]}
    assert sources(path=tree.root) == sorted(digest.values())
    assert sources(path=tree.root, user="bea") == sorted(digest[p] for p in bea)
    assert sources(path=tree.root / "profiles/alex/memory/episodic") == [digest[alex]]


def test_a_folder_without_memories_is_an_error_that_says_where_to_point(tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(DatasetError, match="neither memory/episodic/ nor profiles"):
        curation.prepare(dataset(tmp_path / "notes"), 0.1, tmp_path / "out")


def test_conversations_become_turns_and_other_memories_answer_a_templated_question(tmp_path, tree):
    conv = tree.add(type="conversation", content='Me: "Did you finish the mural?"', response="Almost, one wall left.")
    tree.add(type="dream", content="I dreamt the ferry sailed into the orchard.", hours=48)
    ds = dataset(tree.root, persona={"name": "Sam", "system_prompt": "You are {name}, a landscape architect."})

    _, train, _ = prepare(tmp_path, ds)

    chat, dream = train
    system = {"role": "system", "content": "You are Sam, a landscape architect."}
    assert chat["messages"] == [system, {"role": "user", "content": "Did you finish the mural?"},
                                {"role": "assistant", "content": "Almost, one wall left."}]
    assert dream["messages"] == [system, {"role": "user", "content": "Sam, what did you dream on 2025-06-03?"},
                                 {"role": "assistant", "content": "I dreamt the ferry sailed into the orchard."}]
    source = json.loads(conv.read_text())
    assert chat["id"] == source["id"]
    assert chat["metadata"] == {"source_ids": [source["id"]],
                                "source_sha256": [hashlib.sha256(conv.read_bytes()).hexdigest()],
                                "type": "conversation", "timestamp": source["timestamp"]}


def test_filters_are_settings(tmp_path, tree):
    tree.add(type="journal", hours=0, importance=0.2)
    tree.add(type="journal", hours=24 * 10, tags=[], entities=[])
    tree.add(type="reflection", hours=24 * 20)
    tree.add(type="observation", hours=24 * 30, content="short but fine")
    ds = dataset(tree.root, filters={"types": ["journal", "observation"], "require_tags_or_entities": False,
                                     "min_content_chars": 10, "since": "2025-06-11", "until": "2025-07-01",
                                     "min_importance": 0.3})
    m, train, _ = prepare(tmp_path, ds)
    assert [r["metadata"]["type"] for r in train] == ["journal", "observation"]
    assert m["dropped"]["not_allowed_type"] == 1 and m["dropped"]["out_of_range"] == 1


def test_jsonl_rows_of_either_shape(tmp_path):
    rows = [
        {"instruction": "Describe your week.", "input": "Keep it short.", "output": "Busy <think>hmm</think>but good."},
        {"id": "m1", "messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}],
         "metadata": {"type": "chat", "timestamp": "2025-07-01T10:00:00Z"}},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"},
                      {"role": "assistant", "content": "A"}]},
        {"instruction": "No answer here.", "output": ""},
        {"messages": [{"role": "user", "content": "Left hanging"}]},
        {"instruction": "Private.", "output": "Never train on this.", "metadata": {"trainingConsent": False}},
        {"messages": "not a list"},
        {"prompt": "wrong keys", "completion": "x"},
    ]
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\nnot json\n" + '{"output": "' + "x" * 300 + '"}\n')

    m, train, _ = prepare(tmp_path, dataset(path, source="jsonl", max_file_bytes=200))

    assert m["read"] == 10 and m["kept"] == 3
    assert m["dropped"]["no_response"] == 2 and m["dropped"]["no_consent"] == 1 and m["dropped"]["malformed"] == 4
    assert [b["path"].rsplit(":", 1)[1] for b in m["malformed"]] == ["7", "8", "10", "11"]
    by_id = {r["id"]: r for r in train}
    assert by_id["m1"]["messages"][0] == {"role": "system",
                                          "content": "You are Alex. Answer in your own voice, from your own memories."}
    assert by_id["m1"]["metadata"]["type"] == "chat"
    first = next(r for r in train if r["id"].startswith("row-"))
    assert first["messages"][1:] == [{"role": "user", "content": "Describe your week.\n\nKeep it short."},
                                     {"role": "assistant", "content": "Busy but good."}]
    assert any(r["messages"][0]["content"] == "Be brief." for r in train)


def test_the_split_is_a_function_of_the_id(tmp_path, tree):
    for i in range(200):
        tree.add(hours=i)
    ds = dataset(tree.root)
    m1, train1, eval1 = prepare(tmp_path, ds, eval_fraction=0.25)
    first = (tmp_path / "out/train.jsonl").read_bytes(), (tmp_path / "out/eval.jsonl").read_bytes()
    m2, _, _ = prepare(tmp_path, ds, eval_fraction=0.25)
    assert ((tmp_path / "out/train.jsonl").read_bytes(), (tmp_path / "out/eval.jsonl").read_bytes()) == first
    assert m1 == m2
    assert 30 <= len(eval1) <= 70  # 25% of 200, give or take the hash

    for i in range(50):
        tree.add(hours=500 + i)
    _, train3, eval3 = prepare(tmp_path, ds, eval_fraction=0.25)
    assert {r["id"] for r in eval1} <= {r["id"] for r in eval3}  # more memories never move one across
    assert {r["id"] for r in train1} <= {r["id"] for r in train3}


def test_workers_give_the_same_dataset_as_one_process(tmp_path, tree):
    for i in range(2 * CHUNK + 100):  # three runs for two workers
        tree.add(content=sentence(i % 700, 30) if i % 9 else LONG, hours=i)
    tree.raw("memory/episodic/2025/garbage.json", b"\x00\x01garbage")
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        m = curation.prepare(dataset(tree.root, workers=workers), 0.1, out)
        outputs.append(((out / "train.jsonl").read_bytes(), (out / "eval.jsonl").read_bytes(),
                        {k: v for k, v in m.items() if k != "config"}))
    assert outputs[0] == outputs[1]
    assert outputs[0][2]["dropped"]["duplicate"] > 0 and outputs[0][2]["dropped"]["malformed"] == 1


def test_two_memories_with_one_id_become_two_examples(tmp_path, tree):
    tree.add(layout="profile", user="alex", id="evt-20250601120000")
    tree.add(layout="profile", user="bea", id="evt-20250601120000")
    _, train, _ = prepare(tmp_path, dataset(tree.root))
    assert sorted(r["id"] for r in train) == ["evt-20250601120000", "evt-20250601120000~2"]


def test_the_memory_folder_is_only_ever_read(tmp_path, tree):
    for i in range(20):
        tree.add(hours=i, layout="old" if i % 2 else "profile")
    tree.raw("memory/episodic/2025/bad.json", b"\xff\xfe not utf-8")
    before = snapshot(tree.root)
    folders = [p for p in tree.root.rglob("*") if p.is_dir()] + [tree.root]
    for p in tree.root.rglob("*.json"):
        p.chmod(0o444)
    for p in folders:
        p.chmod(0o555)
    try:
        m, train, _ = prepare(tmp_path, dataset(tree.root))
    finally:
        for p in folders:
            p.chmod(0o755)
    assert m["kept"] == 20 == len(train)
    for p in tree.root.rglob("*.json"):
        p.chmod(0o644)
    after = snapshot(tree.root)
    assert {k: (d, t) for k, (d, _, t) in after.items()} == {k: (d, t) for k, (d, _, t) in before.items()}


def test_the_bundled_sample_keeps_most_of_its_memories(tmp_path):
    m, train, evals = prepare(tmp_path, dataset(None, source="sample", persona={"name": "Sam Rivera"}), 0.1)
    assert m["read"] >= 200 and m["kept"] >= 150 and m["dropped"]["malformed"] == 0
    assert m["dropped"]["no_consent"] > 0 and m["dropped"]["duplicate"] + m["dropped"]["near_duplicate"] > 0
    assert len(train) > len(evals) > 0
