"""Bad input: each unreadable thing is one `malformed` count with its path; nothing hangs or fills memory;
the stage refuses data that is mostly bad, or that leaves nothing to train on, and says what to change."""
import os
import resource

import pytest

import curation
from engine.errors import DatasetError
from tests.memtree import Tree, curate, dataset

EPISODIC = "memory/episodic/2025"


def test_unreadable_files_are_malformed_with_the_reason(tmp_path, tree):
    bad = {
        "not-json.json": (b"this is not json", "not JSON"),
        "not-utf8.json": (b'{"content": "caf\xe9"}', "not UTF-8"),
        "encrypted.json": (os.urandom(512) + b"\xff", "not UTF-8"),
        "openssl.json": (b"U2FsdGVkX1+2k3l4m5n6o7p8q9r0s1t2u3v4w5x6y7z8", "not JSON"),
        "empty.json": (b"", "empty file"),
        "blank.json": (b"  \n\t", "empty file"),
        "array.json": (b"[1, 2]", "not a JSON object"),
        "no-content.json": (b'{"timestamp": "2025-06-01T00:00:00Z"}', "no `content`"),
        "no-timestamp.json": (b'{"content": "A memory that never happened at any time."}', "no `timestamp`"),
        "bad-timestamp.json": (b'{"content": "x", "timestamp": "last tuesday"}', "not ISO 8601"),
    }
    for name, (data, _) in bad.items():
        tree.raw(f"{EPISODIC}/{name}", data)
    m, reasons = curate(tmp_path, dataset(tree.root))
    assert m["read"] == 14 and m["kept"] == 4 and m["dropped"]["malformed"] == 10
    for name, (_, why) in bad.items():
        assert why in reasons[str(tree.root / EPISODIC / name)]


def test_links_fifos_and_huge_files_cost_one_count_each_and_never_hang(tmp_path, tree):
    episodic = tree.root / EPISODIC
    (episodic / "loop").symlink_to(tree.root / "memory/episodic")  # a folder link back up the tree
    (episodic / "self").symlink_to(episodic / "self")  # a link to itself
    (episodic / "self.json").symlink_to(episodic / "self.json")
    (episodic / "gone.json").symlink_to(episodic / "deleted.json")
    os.mkfifo(episodic / "pipe.json")  # opening it for reading would wait for a writer forever
    with open(episodic / "huge.json", "wb") as fh:
        fh.truncate(8 << 30)  # 8 GiB, sparse: stat says huge, the disk holds nothing
    (episodic / "zeros.json").symlink_to("/dev/zero")  # endless bytes behind a size of 0, outside the tree
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    m, reasons = curate(tmp_path, dataset(tree.root))

    assert m["kept"] == 4  # each memory once, though the loop makes every file reachable again and again
    assert m["read"] == 4 + 5
    assert "cannot open" in reasons[str(episodic / "self.json")]
    assert "cannot open" in reasons[str(episodic / "gone.json")]
    assert "not a regular file" in reasons[str(episodic / "pipe.json")]
    assert "over dataset.max_file_bytes=1048576" in reasons[str(episodic / "huge.json")]
    assert "symbolic link to /dev/zero, outside the memory folder" in reasons[str(episodic / "zeros.json")]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200_000  # KiB: nothing read whole


def test_a_file_over_the_size_limit_is_not_read(tmp_path, tree):
    big = tree.add(content="word " * 400)
    m, reasons = curate(tmp_path, dataset(tree.root, max_file_bytes=1000))
    assert m["kept"] == 4
    assert reasons == {str(big): f"{big.stat().st_size} bytes, over dataset.max_file_bytes=1000"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their permissions")
def test_a_folder_that_cannot_be_listed_is_reported(tmp_path, tree):
    locked = tree.root / "memory/episodic/2024"
    locked.mkdir()
    locked.chmod(0)
    try:
        m, reasons = curate(tmp_path, dataset(tree.root))
    finally:
        locked.chmod(0o755)
    assert "cannot list folder" in reasons[str(locked)]


def test_more_bad_files_than_allowed_fail_with_the_first_paths(tmp_path, tree):
    for i in range(2):
        tree.raw(f"{EPISODIC}/enc{i}.json", b"\x8f\x00" * 64)
    ds = dataset(tree.root)  # 2 of 6 = 33% bad, over the default 20%
    m, _ = curate(tmp_path, ds)
    with pytest.raises(DatasetError) as err:
        curation.check(m, ds, tmp_path / "out/manifest.json")
    text = str(err.value)
    assert "2 of 6 inputs (33%)" in text and "dataset.max_bad_fraction=0.2" in text
    assert str(tree.root / EPISODIC / "enc0.json") in text and "nothing was rented" in text
    curation.check(m, dataset(tree.root, max_bad_fraction=0.5), tmp_path / "out/manifest.json")


def test_nothing_left_names_the_filter_that_removed_the_most(tmp_path):
    tree = Tree(tmp_path / "mh")
    for i in range(5):
        tree.add(content="too short")
    tree.add(content="Important enough? No, not by the configured minimum.", importance=0.1)
    ds = dataset(tree.root, filters={"min_importance": 0.2})
    m, _ = curate(tmp_path, ds)
    with pytest.raises(DatasetError) as err:
        curation.check(m, ds, tmp_path / "out/manifest.json")
    text = str(err.value)
    assert "nothing left to train on: 6 inputs read, all dropped" in text
    assert "the most (5) as too_short" in text and "dataset.filters.min_content_chars" in text
    assert str(tmp_path / "out/manifest.json") in text


def test_an_empty_tree_says_so(tmp_path):
    (tmp_path / "mh/memory/episodic").mkdir(parents=True)
    ds = dataset(tmp_path / "mh")
    m, _ = curate(tmp_path, ds)
    with pytest.raises(DatasetError, match="no inputs found"):
        curation.check(m, ds, tmp_path / "out/manifest.json")
