"""A pod that prints hostile output (malformed progress events, a 10 MB line with no newline) over the real
path: the training script's own stdout, follow_log.py on the "pod", the transport (local, and OpenSSH's sshd),
the train stage. The run succeeds, the adapter comes home, each kind of bad event is warned once, and no line
held on the way is longer than the cap."""
from __future__ import annotations

from pathlib import Path


from engine.context import PROJECT_ROOT
from engine.transport.base import CUT_MARKER, MAX_LINE
from stages.train import EVENT_PREFIX
from tests.conftest import run_lorapod
from tests.test_ssh_provider import ssh_args

LONG_LINE = 10 * 1024 * 1024
BAD = [
    '{"event": "step", "total": 5}', '{"event": "step", "total": 5}',  # the same kind twice: told once
    '{"event": "eval", "phase": "before", "eval_loss": null}', "[1, 2]", "7", '"x"',
    '{"event": "step", "step": 1, "total": "many"}', "{not json",
]
KINDS = ["'step' event with 'step' = None", "'eval_loss' = None", "a JSON list", "a JSON int", "a JSON str",
         "'total' = 'many'", "not valid JSON"]

# remote.script: prints the hostile lines, then a 10 MB line without a newline for a while, then runs the real
# training script as the pod would (the "pod" here is this machine, so its path is reachable).
WRAPPER = f"""
import runpy, sys, time
for payload in {BAD!r}:
    sys.stdout.write({EVENT_PREFIX!r} + payload + "\\n")
sys.stdout.write("@@lorapod " + "x" * {LONG_LINE})
sys.stdout.flush()
time.sleep(1.0)  # the follower reads the line's start before its end exists
sys.stdout.write(" end of the long line\\n")
sys.stdout.flush()
runpy.run_path({str(PROJECT_ROOT / "remote_image" / "train_unsloth.py")!r}, run_name="__main__")
"""


def hostile_script(tmp_path: Path) -> Path:
    script = tmp_path / "hostile_train.py"
    script.write_text(WRAPPER)
    return script


def assert_survived(run) -> None:
    assert run.proc.returncode == 0, run.output[-3000:]
    assert run.summary["status"] == "succeeded"
    assert (run.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    log = (run.run_dir / "run.log").read_text()
    warnings = [line for line in log.splitlines() if "ignored a progress event" in line]
    assert len(warnings) == len(KINDS), warnings
    for kind in KINDS:
        assert sum(kind in w for w in warnings) == 1, kind
    assert "train.log line 1)" in warnings[0]
    report = run.state["outputs"]["pod_output"]
    assert report["longest_line"] <= MAX_LINE, "the follower never held the 10 MB line"
    home = (run.run_dir / "train.log").read_bytes().splitlines()
    cut = [line for line in home if line.endswith(CUT_MARKER)]
    assert len(cut) == 1 and len(cut[0]) == MAX_LINE
    assert b" end of the long line" not in (run.run_dir / "train.log").read_bytes()
    assert max(len(line) for line in home) <= MAX_LINE


def test_hostile_output_over_the_local_provider(tmp_path, run_dir):
    run = run_lorapod(f"remote.script={hostile_script(tmp_path)}", "train.max_steps=3", run_dir=run_dir)
    assert_survived(run)


def test_hostile_output_over_sshd(plain_sshd, tmp_path, run_dir):
    run = run_lorapod(*ssh_args(plain_sshd, tmp_path), f"remote.script={hostile_script(tmp_path)}",
                      run_dir=run_dir)
    assert_survived(run)
