"""fetch never writes outside the run directory, whatever result.json says."""
from __future__ import annotations

import pytest

from engine.errors import StageError
from stages.fetch import safe_destination


@pytest.mark.parametrize("rel", ["../evil", "adapter/../../evil", "/etc/passwd", "", "a\\..\\b"])
def test_paths_leaving_the_run_dir_are_refused(tmp_path, rel):
    with pytest.raises(StageError):
        safe_destination(tmp_path, rel)


def test_a_nested_path_lands_inside(tmp_path):
    assert safe_destination(tmp_path, "adapter/adapter_config.json") == (tmp_path / "adapter" / "adapter_config.json").resolve()


def test_a_symlink_pointing_out_is_refused(tmp_path):
    (tmp_path / "adapter").symlink_to("/tmp")
    with pytest.raises(StageError):
        safe_destination(tmp_path, "adapter/x")
