"""A small MetaHuman OS tree of four good memories, for the tests that add bad ones to it."""
import pytest

from tests.memtree import Tree


@pytest.fixture
def tree(tmp_path):
    tree = Tree(tmp_path / "mh")
    for i in range(4):
        tree.add(hours=i)
    return tree
