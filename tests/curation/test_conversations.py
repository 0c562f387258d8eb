"""Conversation memories sharing a conversation (or session) id -> one multi-turn example in time order, and
every memory still accounted for in manifest.json (read = kept_memories + drops)."""
from __future__ import annotations

import json

import curation
from tests.memtree import Tree, dataset, read_rows, sentence

PROMPT = "You are Alex. Answer in your own voice, from your own memories."


def say(tree: Tree, n: int, hours: float, meta: dict, **fields):
    """One exchange: a question and the persona's answer, each of distinct words so nothing is a duplicate."""
    return tree.add(type="conversation", content=f"Question {n}: {sentence(100 + n, 8)}",
                    response=f"Answer {n}: {sentence(200 + n, 10)}", hours=hours, metadata=meta, **fields)


def prepared(tmp_path, ds) -> tuple[dict, dict[str, dict]]:
    out = tmp_path / "out"
    m = curation.prepare(ds, 0.0, out)
    assert json.loads((out / "manifest.json").read_text()) == m
    assert m["read"] == m["kept_memories"] + sum(m["dropped"].values())  # every memory in one place
    rows = read_rows(out / "train.jsonl")
    assert m["kept_memories"] == sum(len(r["metadata"]["source_ids"]) for r in rows)
    return m, {r["id"]: r for r in rows}


def mem_id(path) -> str:
    return json.loads(path.read_text())["id"]


def test_three_memories_of_a_conversation_become_one_example_of_six_turns_in_time_order(tmp_path):
    tree = Tree(tmp_path / "mh")
    conv = {"conversationId": "conv-42"}
    # Written out of order: the files' order must not matter, the timestamps do.
    third = say(tree, 3, hours=30, meta=conv)
    first = say(tree, 1, hours=10, meta=conv)
    second = say(tree, 2, hours=20, meta=conv, importance=0.9)

    m, rows = prepared(tmp_path, dataset(tree.root))

    assert list(rows) == ["conversation-conv-42"] and m["kept"] == 1 and m["conversations"] == 1
    row = rows["conversation-conv-42"]
    assert [(t["role"], t["content"].split(":")[0]) for t in row["messages"]] == [
        ("system", PROMPT.split(":")[0]), ("user", "Question 1"), ("assistant", "Answer 1"),
        ("user", "Question 2"), ("assistant", "Answer 2"), ("user", "Question 3"), ("assistant", "Answer 3")]
    meta = row["metadata"]
    assert meta["source_ids"] == [mem_id(first), mem_id(second), mem_id(third)]
    assert len(meta["source_sha256"]) == 3 and meta["turns"] == 3 and meta["conversation"] == "conversation:conv-42"
    assert meta["timestamp"] == json.loads(third.read_text())["timestamp"]  # the last turn's time
    assert m["kept_memories"] == m["read"] == 3


def test_mixed_conversation_ids_make_one_example_each_and_other_memories_stay_alone(tmp_path):
    tree = Tree(tmp_path / "mh")
    for n, (cid, hours) in enumerate([("a", 1), ("b", 2), ("a", 3), ("b", 4), ("a", 5)]):
        say(tree, n, hours=hours, meta={"conversationId": cid})
    alone = say(tree, 9, hours=6, meta={"processed": True})  # no id: its own example
    observation = tree.add(content=sentence(77), hours=7, metadata={"conversationId": "a"})  # not a chat

    m, rows = prepared(tmp_path, dataset(tree.root))

    assert set(rows) == {"conversation-a", "conversation-b", mem_id(alone), mem_id(observation)}
    assert rows["conversation-a"]["metadata"]["turns"] == 3 and rows["conversation-b"]["metadata"]["turns"] == 2
    assert [t["content"].split(":")[0] for t in rows["conversation-a"]["messages"][1::2]] == [
        "Question 0", "Question 2", "Question 4"]
    assert len(rows[mem_id(alone)]["messages"]) == 3 and len(rows[mem_id(observation)]["messages"]) == 3
    assert (m["read"], m["kept"], m["kept_memories"], m["conversations"]) == (7, 4, 7, 2)


def test_session_id_groups_when_there_is_no_conversation_id_and_conversation_id_wins(tmp_path):
    tree = Tree(tmp_path / "mh")
    say(tree, 1, hours=1, meta={"sessionId": "s-1"})
    say(tree, 2, hours=2, meta={"sessionId": "s-1"})
    say(tree, 3, hours=3, meta={"sessionId": "s-1", "conversationId": "c-9"})
    say(tree, 4, hours=4, meta={"conversationId": "c-9"})

    _, rows = prepared(tmp_path, dataset(tree.root))

    assert set(rows) == {"session-s-1", "conversation-c-9"}
    assert rows["session-s-1"]["metadata"]["conversation"] == "session:s-1"
    assert [t["content"].split(":")[0] for t in rows["conversation-c-9"]["messages"][1:]] == [
        "Question 3", "Answer 3", "Question 4", "Answer 4"]


def test_a_filtered_turn_is_dropped_alone_and_counted_once(tmp_path):
    tree = Tree(tmp_path / "mh")
    conv = {"conversationId": "c"}
    kept = [say(tree, 1, hours=1, meta=conv), say(tree, 3, hours=3, meta=conv)]
    tree.add(type="conversation", content="Question 2: anyone there at all?", response=..., hours=2, metadata=conv)
    say(tree, 4, hours=4, meta=conv | {"trainingConsent": False})

    m, rows = prepared(tmp_path, dataset(tree.root))

    assert rows["conversation-c"]["metadata"]["source_ids"] == [mem_id(p) for p in kept]
    assert m["dropped"]["no_response"] == 1 and m["dropped"]["no_consent"] == 1
    assert (m["read"], m["kept"], m["kept_memories"]) == (4, 1, 2)


def test_a_conversation_over_max_turns_is_split_into_parts_and_loses_nothing(tmp_path):
    tree = Tree(tmp_path / "mh")
    for n in range(7):
        say(tree, n, hours=n, meta={"conversationId": "long"})

    m, rows = prepared(tmp_path, dataset(tree.root, max_turns=3))

    assert {k: v["metadata"]["turns"] for k, v in rows.items()} == {
        "conversation-long": 3, "conversation-long-2": 3, "conversation-long-3": 1}
    assert [t["content"].split(":")[0] for t in rows["conversation-long-3"]["messages"][1:]] == [
        "Question 6", "Answer 6"]
    assert (m["kept"], m["kept_memories"], m["conversations"]) == (3, 7, 2)  # the last part is one exchange


def test_an_exchange_stored_twice_in_a_conversation_is_said_once(tmp_path):
    tree = Tree(tmp_path / "mh")
    conv = {"conversationId": "c"}
    say(tree, 1, hours=1, meta=conv)
    again = tree.add(type="conversation", content="QUESTION 1: " + sentence(101, 8), response="answer 1 " +
                     sentence(201, 10), hours=2, metadata=conv)  # the same words, re-stored by an agent
    say(tree, 3, hours=3, meta=conv)

    m, rows = prepared(tmp_path, dataset(tree.root))

    assert rows["conversation-c"]["metadata"]["source_ids"][0] == mem_id(again)  # the newer copy
    assert rows["conversation-c"]["metadata"]["turns"] == 2 and m["dropped"]["duplicate"] == 1


def test_duplicate_and_cap_counts_are_in_memories(tmp_path):
    tree = Tree(tmp_path / "mh")
    for n in range(3):
        say(tree, n, hours=n, meta={"conversationId": "c"}, importance=0.2)
    tree.add(content=sentence(300), hours=10, importance=0.9)

    m, rows = prepared(tmp_path, dataset(tree.root, filters={"max_examples": 1}))

    assert len(rows) == 1 and m["dropped"]["over_cap"] == 3  # the three memories of the capped conversation
    assert (m["kept"], m["kept_memories"]) == (1, 1)


def test_conversations_in_two_profiles_never_merge(tmp_path):
    tree = Tree(tmp_path / "mh")
    for user in ("alex", "bea"):
        for n in range(2):
            say(tree, n + (10 if user == "bea" else 0), hours=n, meta={"conversationId": "same"},
                layout="profile", user=user)

    m, rows = prepared(tmp_path, dataset(tree.root))

    assert sorted(rows) == ["conversation-same", "conversation-same~2"]
    assert {r["metadata"]["turns"] for r in rows.values()} == {2}


def test_the_table_reports_examples_and_conversations(tmp_path):
    tree = Tree(tmp_path / "mh")
    for n in range(2):
        say(tree, n, hours=n, meta={"conversationId": "c"})
    m, _ = prepared(tmp_path, dataset(tree.root))
    assert "1 examples, 1 of them multi-turn conversations" in curation.table(m)[-1]


def test_a_conversation_stored_twice_is_a_duplicate_and_a_reworded_one_a_near_duplicate(tmp_path):
    tree = Tree(tmp_path / "mh")
    for cid, hours in (("first", 0), ("copy", 10)):  # the same two exchanges under another id, later
        say(tree, 1, hours=hours + 1, meta={"conversationId": cid})
        say(tree, 2, hours=hours + 2, meta={"conversationId": cid})
    say(tree, 3, hours=21, meta={"conversationId": "other"})
    reworded = tree.add(type="conversation", content=f"Question 4: {sentence(104, 8)}", hours=22,
                        response=f"Answer 3: {sentence(203, 10)}", metadata={"conversationId": "other"})
    say(tree, 3, hours=31, meta={"conversationId": "reworded"})
    tree.add(type="conversation", content=f"Question 4: {sentence(104, 8)}", hours=32,
             response=f"Answer 3: {sentence(203, 9)} changed.", metadata={"conversationId": "reworded"})

    m, rows = prepared(tmp_path, dataset(tree.root))

    assert set(rows) == {"conversation-copy", "conversation-reworded"}  # the newer of each pair
    assert m["dropped"]["duplicate"] == 2 and m["dropped"]["near_duplicate"] == 2  # counted in memories
    assert mem_id(reworded) not in rows["conversation-reworded"]["metadata"]["source_ids"]


def test_conversations_merged_on_two_workers_give_the_same_dataset_as_one_process(tmp_path, monkeypatch):
    import curation.parallel

    monkeypatch.setattr(curation.parallel, "CHUNK", 4)  # several runs of memories and of conversations
    tree = Tree(tmp_path / "mh")
    for n in range(40):
        say(tree, n, hours=n, meta={"conversationId": f"c{n % 7}"} if n % 5 else {"sessionId": "s"})
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        m = curation.prepare(dataset(tree.root, workers=workers, max_turns=3), 0.3, out)
        outputs.append(((out / "train.jsonl").read_bytes(), (out / "eval.jsonl").read_bytes(),
                        {k: v for k, v in m.items() if k != "config"}))
    assert outputs[0] == outputs[1]
    assert outputs[0][2]["conversations"] > 4 and outputs[0][2]["kept_memories"] == 40
