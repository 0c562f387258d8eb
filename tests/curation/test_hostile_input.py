"""Hostile input: text that is valid JSON but not valid Unicode, nesting deeper than a parser goes, links out of
the memory folder, files swapped for links while curation runs. Each is one `malformed` count with a reason,
nothing outside the memory folder is read or listed, and the folder itself is never changed."""
import json
import os

import pytest

from curation import process
from curation.memory import Malformed
from curation.persona import resolve
from curation.process import Processor
from curation.read import parse_json, read_bytes
from curation.walk import json_files, real_folders
from tests.memtree import Tree, curate, dataset, sentence, snapshot

EPISODIC = "memory/episodic/2025"
MEMORY = '{"id": "%s", "timestamp": "2025-05-01T10:00:00Z", "type": "observation", "tags": ["t"], "content": "%s"}'


def every_input_counted_once(m: dict) -> None:
    assert m["read"] == m["kept"] + sum(m["dropped"].values())
    assert m["dropped"]["malformed"] == len(m["malformed"])


def strict_utf8_rows(out) -> list[dict]:
    rows = []
    for name in ("train.jsonl", "eval.jsonl"):
        text = (out / name).read_bytes().decode("utf-8")  # strict: a surrogate written out would fail here
        rows += [json.loads(line) for line in text.splitlines()]
    return rows


def test_lone_surrogates_are_malformed_and_valid_pairs_are_kept(tmp_path, tree):
    said = sentence(100)
    files = {
        "lone-high.json": (MEMORY % ("a", "\\ud800 " + said)).encode(),
        "lone-low.json": (MEMORY % ("b", said + " \\uDC00")).encode(),  # upper-case hex is JSON too
        "reversed-pair.json": (MEMORY % ("c", "\\ude00\\ud83d " + said)).encode(),
        "in-a-tag.json": (MEMORY % ("d", said)).replace('["t"]', '["\\ud801"]').encode(),  # never written out
        "in-a-key.json": (MEMORY % ("e", said)).replace('"tags"', '"\\udbff"').encode(),
        "utf16.json": (MEMORY % ("f", "\\ud800 " + said)).encode("utf-16"),  # RFC 8259 allows UTF-16
        "raw-surrogate.json": (MEMORY % ("g", "RAW " + said)).encode().replace(b"RAW", b"\xed\xa0\x80"),  # CESU-8
    }
    for name, data in files.items():
        tree.raw(f"{EPISODIC}/{name}", data)
    good = {
        "pair.json": ((MEMORY % ("h", "\\ud83d\\ude00 " + sentence(101))).encode(), "\U0001F600 " + sentence(101)),
        "backslash.json": ((MEMORY % ("i", "C:\\\\ud800 is a folder, " + sentence(102))).encode(), "C:\\ud800 is a"),
        "utf16-good.json": ((MEMORY % ("j", sentence(103))).encode("utf-16"), sentence(103)),
    }
    for name, (data, _) in good.items():
        tree.raw(f"{EPISODIC}/{name}", data)

    m, reasons = curate(tmp_path, dataset(tree.root))

    every_input_counted_once(m)
    assert m["kept"] == 4 + len(good) and m["dropped"]["malformed"] == len(files)
    for name, surrogate in [("lone-high", "d800"), ("lone-low", "dc00"), ("reversed-pair", "de00"),
                            ("in-a-tag", "d801"), ("in-a-key", "dbff"), ("utf16", "d800")]:
        why = reasons[str(tree.root / EPISODIC / f"{name}.json")]
        assert why == f"lone surrogate \\u{surrogate} in a string: not valid Unicode text"
    assert "not UTF-8" in reasons[str(tree.root / EPISODIC / "raw-surrogate.json")]
    answers = [row["messages"][-1]["content"] for row in strict_utf8_rows(tmp_path / "out")]
    for _, text in good.values():
        assert any(a.startswith(text) for a in answers), text


@pytest.mark.parametrize("data, why", [
    (b"[" * 100_000, "nested too deep"),
    (b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, "nested too deep"),  # valid JSON, just deep
    (b'{"content": "x", "timestamp": "2025-01-01", "importance": ' + b"7" * 5000 + b"}", "4300 digits"),
])
def test_json_no_parser_can_hold_is_malformed(tmp_path, tree, data, why):
    tree.raw(f"{EPISODIC}/hostile.json", data)
    m, reasons = curate(tmp_path, dataset(tree.root))
    every_input_counted_once(m)
    assert m["kept"] == 4 and m["dropped"]["malformed"] == 1
    assert why in reasons[str(tree.root / EPISODIC / "hostile.json")]


def test_jsonl_rows_with_surrogates_or_deep_nesting_are_malformed_by_line(tmp_path):
    rows = [json.dumps({"instruction": f"Question {i}?", "output": sentence(200 + i)})
            for i in range(6)]
    rows[1] = '{"instruction": "Hi?", "output": "\\udfff broken answer text here."}'
    rows[3] = "[" * 100_000
    rows[4] = '{"messages": [{"role": "user", "content": "\\ud83d\\ude00?"}, ' \
              '{"role": "assistant", "content": "A smile back, and a longer answer."}]}'
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")

    m, reasons = curate(tmp_path, dataset(path, source="jsonl"))

    every_input_counted_once(m)
    assert m["kept"] == 4 and m["dropped"]["malformed"] == 2
    assert reasons == {f"{path}:2": "lone surrogate \\udfff in a string: not valid Unicode text",
                       f"{path}:4": reasons[f"{path}:4"]}
    assert "nested too deep" in reasons[f"{path}:4"]
    assert any(row["messages"][1]["content"] == "\U0001F600?" for row in strict_utf8_rows(tmp_path / "out"))


def test_a_fault_on_one_input_is_named_in_the_manifest_and_the_rest_go_on(tmp_path, monkeypatch):
    # A fault injected into conversion (a fake: no real input is known to cause one any more), in a tree large
    # enough that the forked workers of curation.parallel do the work, as they do for a real folder.
    tree = Tree(tmp_path / "mh")
    for i in range(1100):
        tree.add(hours=i / 60)
    doomed = tree.add(hours=-1, content="The one memory that makes conversion fail, for the sake of the test.")
    real = process.from_memory

    def faulty(mem, *args):
        if mem.content.startswith("The one memory that makes conversion fail"):
            raise ZeroDivisionError("division by zero")
        return real(mem, *args)

    monkeypatch.setattr(process, "from_memory", faulty)
    m, reasons = curate(tmp_path, dataset(tree.root, workers=2))
    every_input_counted_once(m)
    assert m["read"] == 1101 and m["dropped"]["malformed"] == 1
    assert reasons[str(doomed)].startswith("could not be processed (ZeroDivisionError: division by zero)")
    assert "please report it" in reasons[str(doomed)]


def test_links_out_of_the_memory_folder_are_reported_and_never_followed(tmp_path, tree):
    episodic = tree.root / EPISODIC
    elsewhere = Tree(tmp_path / "bob")  # another user's memories, beside this tree
    secret = elsewhere.add(content="Bob's own memory, which must never reach Alex's adapter or manifest.")
    (episodic / "everything").symlink_to("/")  # walked, this would list the whole machine
    (episodic / "passwd.json").symlink_to("/etc/passwd")
    (episodic / "bob").symlink_to(elsewhere.root / "memory")
    (episodic / "bobs.json").symlink_to(secret)
    (episodic / "up").symlink_to("../../..")  # relative, out through the top of the tree
    (episodic / "notes.txt").symlink_to("/etc/hostname")  # not a memory and not a folder: not one either way
    before = snapshot(tree.root)

    m, reasons = curate(tmp_path, dataset(tree.root))

    every_input_counted_once(m)
    assert m["kept"] == 4 and m["read"] == 4 + 5
    real_up = os.path.realpath(tree.root)
    for name, target in [("everything", "/"), ("passwd.json", "/etc/passwd"), ("up", real_up),
                         ("bob", os.path.realpath(elsewhere.root / "memory")),
                         ("bobs.json", os.path.realpath(secret))]:
        assert reasons[str(episodic / name)].startswith(f"symbolic link to {target}, outside the memory folder "), name
    assert all(path.startswith(str(tree.root)) for path in reasons)  # nothing found outside is listed
    assert "Bob's own memory" not in json.dumps(strict_utf8_rows(tmp_path / "out"))
    assert snapshot(tree.root) == before


def test_links_inside_the_memory_folder_are_followed(tmp_path, tree):
    episodic = tree.root / "memory/episodic"
    first = sorted((episodic / "2025").iterdir())[0]
    (episodic / "2025/alias.json").symlink_to(first)  # the same memory twice: read, then counted as duplicate
    (episodic / "latest").symlink_to("2025")  # the same folder twice: listed once
    (episodic / "2024").mkdir()
    os.mkfifo(episodic / "2024/pipe")
    (episodic / "2024/pipe.json").symlink_to("pipe")  # a link inside, to something that is not a file

    m, reasons = curate(tmp_path, dataset(tree.root))

    every_input_counted_once(m)
    assert m["read"] == 4 + 2 and m["kept"] == 4 and m["dropped"]["duplicate"] == 1
    assert reasons == {str(episodic / "2024/pipe.json"): "not a regular file"}


def test_an_episodic_folder_that_is_a_link_out_of_the_tree_is_not_walked(tmp_path):
    outside = Tree(tmp_path / "outside")
    outside.add()
    root = tmp_path / "mh"
    (root / "memory").mkdir(parents=True)
    (root / "memory/episodic").symlink_to(outside.root / "memory/episodic")
    m, reasons = curate(tmp_path, dataset(root))
    assert m["read"] == 1 and m["kept"] == 0
    assert reasons[str(root / "memory/episodic")].startswith(
        f"symbolic link to {os.path.realpath(outside.root / 'memory/episodic')}, outside the memory folder")


def test_a_file_or_folder_swapped_for_a_link_after_the_walk_is_not_read(tmp_path, tree):
    # The walk checks links when it lists; an open happens later, in a worker. What is swapped in between
    # must not be read: the opened file's real path is checked.
    tree.add(hours=-24 * 200)  # one memory in 2024/, the others in 2025/
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.json"
    secret.write_text(MEMORY % ("s", "A secret from outside the memory folder, not for training."))
    roots = [str(tree.root / "memory/episodic")]
    problems: list = []
    paths = list(json_files(roots, problems, home=str(tree.root)))
    assert len(paths) == 5 and "/2024/" in paths[0] and not problems
    in_folder, file_swapped = paths[0], paths[-1]
    os.rename(file_swapped, file_swapped + ".moved")
    os.symlink(secret, file_swapped)
    year = os.path.dirname(in_folder)
    os.rename(year, year + ".moved")
    os.symlink(outside, year)  # the folder, swapped: the path is the same, what it leads to is not
    os.link(secret, outside / os.path.basename(in_folder))

    ds = dataset(tree.root)
    batch = Processor(ds, resolve(ds), real_folders(roots, str(tree.root))).memory_files(paths)

    assert batch.read == 5 and len(batch.candidates) == 3
    reasons = dict(batch.malformed)
    assert reasons[file_swapped] == (f"is really {os.path.realpath(secret)}, outside the memory folder "
                                     "(a link swapped in?); not read")
    assert reasons[in_folder].startswith(f"is really {os.path.realpath(outside / os.path.basename(in_folder))}, ")


def test_reading_checks_the_file_it_opened(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out/x.json").write_bytes(b"{}")
    (tmp_path / "in/x.json").symlink_to(tmp_path / "out/x.json")
    with pytest.raises(Malformed, match="outside the memory folder"):
        read_bytes(str(tmp_path / "in/x.json"), 1 << 20, within=(f"{tmp_path / 'in'}/",))
    assert read_bytes(str(tmp_path / "in/x.json"), 1 << 20, within=(f"{tmp_path}/",)) == b"{}"
    with pytest.raises(Malformed, match="lone surrogate"):
        parse_json(b'["\\ud800"]')


def test_names_that_are_not_utf8_are_malformed_not_a_crash(tmp_path, tree):
    # Linux file names are bytes; Python keeps undecodable ones as lone surrogates, which neither train.jsonl
    # (a memory without an id is named after its file) nor manifest.json could hold.
    episodic = os.fsencode(tree.root / EPISODIC)
    memory = (MEMORY % ("", sentence(300))).replace('"id": "", ', "").encode()
    with open(os.path.join(episodic, b"caf\xe9.json"), "wb") as fh:  # Latin-1, as an old system wrote it
        fh.write(memory)
    os.mkdir(os.path.join(episodic, b"d\xfcsseldorf"))
    with open(os.path.join(episodic, b"d\xfcsseldorf", b"trip.json"), "wb") as fh:
        fh.write(memory.replace(b"2025-05-01", b"2025-05-02"))
    with open(os.path.join(episodic, b"notes-\xff.txt"), "wb") as fh:  # not a memory: not one either way
        fh.write(b"x")
    tree.add(content="Caf\u00e9 au lait by the harbor, a name in UTF-8 is fine.")
    before = snapshot(tree.root)

    m, reasons = curate(tmp_path, dataset(tree.root))

    every_input_counted_once(m)
    assert m["kept"] == 5 and m["read"] == 7
    folder = str(tree.root / EPISODIC)
    assert reasons == {f"{folder}/caf\\xe9.json": "its name is not UTF-8 text: rename it to train on it",
                       f"{folder}/d\\xfcsseldorf": "its name is not UTF-8 text: rename it to train on it"}
    json.loads((tmp_path / "out/manifest.json").read_bytes().decode("utf-8"))
    assert snapshot(tree.root) == before
