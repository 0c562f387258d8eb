"""The workdir check's verdict, on the output of its real shell command run here against real folders."""
from __future__ import annotations

import os
import subprocess

import pytest

from engine.remote_folder import check_command, verdict


def check(workdir: str | None, home: str | None = None) -> tuple[str, str | None]:
    env = dict(os.environ, HOME=home or os.environ.get("HOME", "/root"))
    out = subprocess.run(["bash", "-c", check_command(workdir)], capture_output=True, text=True, env=env, timeout=30)
    return verdict(out.stdout.splitlines())


@pytest.fixture
def private(tmp_path):
    tmp_path.chmod(0o700)
    return tmp_path


def test_the_default_is_lorapod_under_home(private):
    assert check(None, home=str(private)) == (f"{private}/lorapod", None)
    assert check("~/runs", home=str(private)) == (f"{private}/runs", None)


def test_a_private_folder_is_accepted_existing_or_not(private):
    (private / "work").mkdir(mode=0o700)
    assert check(str(private / "work"))[1] is None
    assert check(str(private / "new" / "deeper"))[1] is None


def test_a_world_writable_parent_is_refused(private):
    shared = private / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "work").mkdir(mode=0o700)
    workdir, problem = check(str(shared / "work"))
    assert problem.startswith(f"{shared} is writable by others (mode 777)"), problem
    assert "does not exist and would be made in" in check(str(shared / "missing"))[1]


def test_a_group_writable_workdir_is_refused(private):
    work = private / "work"
    work.mkdir()
    work.chmod(0o770)
    assert check(str(work))[1].startswith(f"{work} is writable by its group")


def test_a_sticky_folder_is_fine_above_a_folder_of_yours_but_not_for_a_folder_yet_to_be_made(private):
    sticky = private / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (sticky / "mine").mkdir(mode=0o700)
    assert check(str(sticky / "mine"))[1] is None
    assert "would be made in" in check(str(sticky / "theirs"))[1]
    assert check(str(sticky))[1].startswith(f"{sticky} is writable by others (mode 1777)")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder away needs root")
def test_a_folder_owned_by_someone_else_is_refused(private):
    theirs = private / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    problem = check(str(theirs / "work"))[1]
    assert problem.startswith(f"{theirs} belongs to uid 65534, not to you (uid 0) or root"), problem


def test_a_symlink_to_a_shared_folder_is_refused_by_where_it_leads(private):
    shared = private / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "work").mkdir(mode=0o700)
    (private / "link").symlink_to(shared / "work")
    assert check(str(private / "link"))[1].startswith(f"{shared} is writable by others")


def test_output_cut_short_is_a_problem_not_a_pass():
    assert verdict(["uid 0", "dir /x", "stat 0 755 directory|/"])[1].startswith("could not check")
    assert verdict([])[1].startswith("could not check")
