"""fetch takes only what it should: the allowlist, the run's own records, symlinks, and the size caps.

A real RunContext and the real LocalTransport: the "pod" is a folder, as with provider=local. The transport
only records what it was asked to download, so a test can say that a refused file never left the pod.
"""
from __future__ import annotations

import hashlib
import json
import os

import pytest
from omegaconf import OmegaConf

from engine.context import RunContext
from engine.errors import StageError, TransportError
from engine.hashing import sha256_file
from engine.schema import LocalProviderConfig
from engine.state import RunState
from engine.transport.local import LocalTransport
from stages.fetch import Fetch

MB = 1 << 20
# The run's own records, each as the run made it; none may change, whatever the pod says.
RECORDS = ["run.log", "state.json", "run-summary.json", "train.log", "config.json", ".hydra/config.yaml",
           "ssh/id_ed25519", "dataset/train.jsonl"]
GOOD = {"adapter/adapter_config.json": b'{"r": 8}', "adapter/adapter_model.safetensors": b"w" * 3000,
        "base_model/config.json": b"{}", "metrics.jsonl": b'{"step": 1}\n'}


def _hashes(files: dict[str, bytes]) -> dict[str, str]:
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}


class RecordingTransport(LocalTransport):
    """The local transport, noting every download it is asked for."""

    def __init__(self):
        self.gets: list[str] = []

    def get(self, remote, local, sha256=None, max_bytes=None):
        self.gets.append(os.path.basename(remote) if remote.endswith("result.json") else remote)
        return super().get(remote, local, sha256=sha256, max_bytes=max_bytes)


class Pod:
    def __init__(self, tmp_path, max_fetch_mb=None, transport=None):
        self.run_dir = tmp_path / "run"
        for rel in RECORDS:
            (self.run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.run_dir / rel).write_text(f"the run's own {rel}")
        provider = OmegaConf.structured(LocalProviderConfig)
        if max_fetch_mb is not None:
            provider.max_fetch_mb = max_fetch_mb
        cfg = OmegaConf.create({"remote": {"workdir": str(tmp_path / "pod")}, "provider": provider})
        self.transport = transport or RecordingTransport()
        self.ctx = RunContext(cfg=cfg, run_dir=self.run_dir, state=RunState(run_id="t"), transport=self.transport)
        self.out = tmp_path / "pod" / self.ctx.pod_name / "out"
        self.out.mkdir(parents=True)

    def write(self, files: dict[str, bytes], listed: dict[str, str] | None = None, **result) -> None:
        """The pod's outputs, and a result.json listing them (or `listed`, when the pod lies)."""
        for rel, data in files.items():
            path = self.out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if listed is None:
            listed = {rel: sha256_file(self.out / rel) for rel in files}
        body = {"status": "succeeded", "eval_loss_before": 2.0, "eval_loss_after": 1.0, "files": listed, **result}
        (self.out / "result.json").write_text(json.dumps(body))

    def fetch(self) -> StageError | None:
        try:
            Fetch().run(self.ctx)
        except StageError as exc:
            return exc
        return None

    def downloaded(self) -> set[str]:
        return {os.path.relpath(g, self.out) for g in self.transport.gets if g != "result.json"}

    def assert_records_untouched(self) -> None:
        for rel in RECORDS:
            path = self.run_dir / rel
            assert not path.is_symlink() and path.read_text() == f"the run's own {rel}", rel


def test_the_adapter_base_metrics_and_result_come_home_verified(tmp_path):
    pod = Pod(tmp_path)
    pod.write({**GOOD, "plots/loss.png": b"png", "loss.png": b"png"})
    assert pod.fetch() is None
    for rel in [*GOOD, "plots/loss.png", "loss.png", "result.json"]:
        assert sha256_file(pod.run_dir / rel) == sha256_file(pod.out / rel), rel
    assert not list(pod.run_dir.rglob("*.part"))
    fetched = pod.ctx.state.outputs["fetch"]
    assert fetched["refused"] == [] and fetched["bytes"] == sum(len(d) for d in GOOD.values()) + 6
    assert pod.ctx.state.outputs["result"]["eval_loss_after"] == 1.0
    pod.assert_records_untouched()


@pytest.mark.parametrize("rel", ["run.log", "state.json", "run-summary.json", "train.log", "config.json",
                                 ".hydra/config.yaml", "ssh/id_ed25519", "dataset/train.jsonl", "RUN.LOG",
                                 "State.json", ".HYDRA/config.yaml", "Dataset/train.jsonl", "../x",
                                 "Adapter/../state.json", "adapter/../state.json", "./state.json", "adapter//x",
                                 "adapter\\..\\state.json", "notes.txt", "adapter", "pod/x",
                                 "Adapter/x", "adapter/x\nfetched 0 files"])
def test_an_entry_outside_the_allowlist_is_refused_and_the_good_ones_still_come_home(tmp_path, rel):
    pod = Pod(tmp_path)
    pod.write(GOOD, listed={**_hashes(GOOD), rel: "0" * 64})
    try:  # the pod really has it, so a fetch that took it would show
        (pod.out / rel).parent.mkdir(parents=True, exist_ok=True)
        (pod.out / rel).write_bytes(b"the pod's version")
    except OSError:  # "adapter" is a folder already
        pass
    error = pod.fetch()
    assert error is not None and repr(rel)[:60] in str(error)
    assert "adapter/…, base_model/…, plots/…, tensorboard/…, *.png at the top and metrics.jsonl" in str(error)
    assert pod.ctx.state.outputs["fetch"]["refused"] == [rel]
    assert pod.downloaded() == set(GOOD), "the good files come home, the bad one is never downloaded"
    assert not (tmp_path / "x").exists()
    pod.assert_records_untouched()


def test_the_run_records_are_refused_in_one_error_naming_each(tmp_path):
    pod = Pod(tmp_path)
    bad = {"run.log": b"x", "state.json": b"x", ".hydra/config.yaml": b"x", "ssh/id_ed25519": b"x",
           "dataset/train.jsonl": b"x"}
    pod.write({**GOOD, **bad})
    error = pod.fetch()
    for rel in bad:
        assert f"'{rel}': would overwrite the run's own" in str(error), rel
    assert "not trusted" in str(error)
    pod.assert_records_untouched()


@pytest.mark.parametrize("make", ["adapter_links_to_hydra", "metrics_links_to_state", "metrics_is_a_folder",
                                  "adapter_links_out"])
def test_a_destination_that_is_a_symlink_or_not_a_file_is_refused(tmp_path, make):
    pod = Pod(tmp_path)
    pod.write({**GOOD, "adapter/config.yaml": b"evil"})
    if make == "adapter_links_to_hydra":  # a link inside the run dir still leads onto a record
        (pod.run_dir / "adapter").symlink_to(pod.run_dir / ".hydra")
        refused = ["adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter/config.yaml"]
    elif make == "metrics_links_to_state":
        (pod.run_dir / "metrics.jsonl").symlink_to(pod.run_dir / "state.json")
        refused = ["metrics.jsonl"]
    elif make == "metrics_is_a_folder":
        (pod.run_dir / "metrics.jsonl").mkdir()
        refused = ["metrics.jsonl"]
    else:
        (pod.run_dir / "adapter").symlink_to(tmp_path)
        refused = ["adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter/config.yaml"]
    error = pod.fetch()
    assert error is not None and pod.ctx.state.outputs["fetch"]["refused"] == refused
    assert not pod.downloaded() & set(refused)
    assert not (tmp_path / "config.yaml").exists()
    pod.assert_records_untouched()


def test_a_symlinked_result_json_stops_fetch_before_anything_is_written(tmp_path):
    pod = Pod(tmp_path)
    pod.write(GOOD)
    (pod.run_dir / "result.json").symlink_to(pod.run_dir / "state.json")
    with pytest.raises(StageError, match="symbolic link"):
        Fetch().run(pod.ctx)
    assert pod.transport.gets == []
    pod.assert_records_untouched()


def test_a_file_over_the_cap_is_refused_before_any_download(tmp_path):
    pod = Pod(tmp_path, max_fetch_mb=1)
    pod.write({**GOOD, "adapter/adapter_model.safetensors": b"w" * (MB + 1)})
    error = pod.fetch()
    assert "'adapter/adapter_model.safetensors': is 1.0 MB, over provider.max_fetch_mb=1" in str(error)
    assert "raise provider.max_fetch_mb (now 1)" in str(error)
    assert "adapter/adapter_model.safetensors" not in pod.downloaded()
    assert not (pod.run_dir / "adapter" / "adapter_model.safetensors").exists()


def test_over_the_cap_together_whole_groups_come_home_adapter_first(tmp_path):
    pod = Pod(tmp_path, max_fetch_mb=1)
    half = b"w" * (MB // 2)
    pod.write({"adapter/adapter_model.safetensors": half, "adapter/tokenizer.json": b"t" * 1000,
               "base_model/model.safetensors": half, "metrics.jsonl": b"{}\n"})
    error = pod.fetch()
    assert pod.downloaded() == {"adapter/adapter_model.safetensors", "adapter/tokenizer.json", "metrics.jsonl"}
    assert "'base_model/model.safetensors': base_model is 0.5 MB in all, more than the" in str(error)
    assert "raise provider.max_fetch_mb (now 1)" in str(error)
    assert not (pod.run_dir / "base_model").exists()


def test_a_result_json_over_its_cap_is_refused_without_being_downloaded(tmp_path):
    pod = Pod(tmp_path)
    pod.write(GOOD, padding="x" * MB)
    with pytest.raises(StageError, match="result.json is 1.0 MB, over the 1.0 MB"):
        Fetch().run(pod.ctx)
    assert pod.transport.gets == [] and not (pod.run_dir / "result.json").exists()


def test_a_result_json_that_is_not_json_stops_fetch(tmp_path):
    pod = Pod(tmp_path)
    pod.write(GOOD)
    (pod.out / "result.json").write_text("{not json")
    with pytest.raises(StageError, match="not JSON"):
        Fetch().run(pod.ctx)
    assert pod.transport.gets == ["result.json"]


def test_a_file_that_grows_during_the_download_is_cut_off_and_refused(tmp_path):
    class Growing(RecordingTransport):
        def get(self, remote, local, sha256=None, max_bytes=None):
            if remote.endswith("adapter_model.safetensors"):  # after its size was checked
                with open(remote, "ab") as fh:
                    fh.write(b"w" * 10 * MB)
            return super().get(remote, local, sha256=sha256, max_bytes=max_bytes)

    pod = Pod(tmp_path, transport=Growing())
    pod.write(GOOD)
    error = pod.fetch()
    assert "'adapter/adapter_model.safetensors': was not fetched:" in str(error) and "over 3000 bytes" in str(error)
    assert not (pod.run_dir / "adapter" / "adapter_model.safetensors").exists()
    assert not list(pod.run_dir.rglob("*.part"))
    assert (pod.run_dir / "adapter" / "adapter_config.json").exists()


@pytest.mark.parametrize("make, why", [("fifo", "not a regular file"), ("folder", "not a regular file"),
                                       ("link_to_dev_zero", "is a symlink on the pod: not fetched")])
def test_a_pod_file_that_is_not_a_regular_file_is_never_read(tmp_path, make, why):
    pod = Pod(tmp_path)
    pod.write(GOOD, listed={**_hashes(GOOD), "adapter/zero.bin": "0" * 64})
    odd = pod.out / "adapter" / "zero.bin"
    if make == "fifo":  # reading it would wait for a writer forever
        os.mkfifo(odd)
    elif make == "folder":
        odd.mkdir()
    else:
        odd.symlink_to("/dev/zero")  # would fill the disk
    error = pod.fetch()
    assert "'adapter/zero.bin': cannot be fetched:" in str(error) and why in str(error)
    assert pod.downloaded() == set(GOOD)


def _outside(tmp_path) -> tuple[object, bytes]:
    """A file outside the pod's out/ folder that the pod's user may read: /etc/shadow, the pod's credentials."""
    secret = tmp_path / "etc" / "shadow"
    secret.parent.mkdir()
    secret.write_bytes(b"root:$6$not-for-home:19000:0:99999:7:::\n")
    return secret, secret.read_bytes()


def test_a_pod_file_that_is_a_symlink_out_of_out_is_refused_even_with_the_right_hash(tmp_path):
    pod = Pod(tmp_path)
    secret, data = _outside(tmp_path)
    pod.write(GOOD, listed={**_hashes(GOOD), "adapter/x": _hashes({"x": data})["x"]})  # the hash would match
    (pod.out / "adapter" / "x").symlink_to(secret)
    error = pod.fetch()
    assert "'adapter/x': cannot be fetched:" in str(error) and "is a symlink on the pod: not fetched" in str(error)
    assert pod.ctx.state.outputs["fetch"]["refused"] == ["adapter/x"]
    assert "adapter/x" not in pod.downloaded() and pod.downloaded() == set(GOOD)
    assert not (pod.run_dir / "adapter" / "x").exists() and not list(pod.run_dir.rglob("*.part"))
    for path in pod.run_dir.rglob("*"):
        assert not path.is_file() or data not in path.read_bytes(), path
    pod.assert_records_untouched()


def test_a_pod_folder_that_is_a_symlink_is_not_fetched_through(tmp_path):
    pod = Pod(tmp_path)
    secret, data = _outside(tmp_path)
    pod.write(GOOD, listed={**_hashes(GOOD), "plots/shadow": _hashes({"x": data})["x"]})
    (pod.out / "plots").symlink_to(secret.parent)  # plots/shadow is a regular file, reached through a link
    error = pod.fetch()
    assert "'plots/shadow': cannot be fetched:" in str(error)
    assert f"{pod.out / 'plots'} (above {pod.out / 'plots' / 'shadow'}) is a symlink on the pod" in str(error)
    assert pod.downloaded() == set(GOOD) and not (pod.run_dir / "plots").exists()


def test_a_file_swapped_for_a_symlink_after_its_size_was_read_is_not_followed(tmp_path):
    secret, data = _outside(tmp_path)

    class Swapping(RecordingTransport):
        def get(self, remote, local, sha256=None, max_bytes=None):
            if remote.endswith("adapter_config.json"):  # sized as a regular file; a link by the time it is read
                os.unlink(remote)
                os.symlink(secret, remote)
            return super().get(remote, local, sha256=sha256, max_bytes=max_bytes)

    pod = Pod(tmp_path, transport=Swapping())
    pod.write({**GOOD, "adapter/adapter_config.json": data})  # the listed hash is the secret's own
    error = pod.fetch()
    assert "'adapter/adapter_config.json': was not fetched:" in str(error) and "is a symlink on the pod" in str(error)
    assert not (pod.run_dir / "adapter" / "adapter_config.json").exists()
    assert not list(pod.run_dir.rglob("*.part"))
    assert (pod.run_dir / "adapter" / "adapter_model.safetensors").exists()


def test_a_result_json_that_is_a_symlink_on_the_pod_stops_fetch_unread(tmp_path):
    pod = Pod(tmp_path)
    pod.write(GOOD)
    elsewhere = tmp_path / "elsewhere.json"
    (pod.out / "result.json").rename(elsewhere)
    (pod.out / "result.json").symlink_to(elsewhere)
    with pytest.raises(TransportError, match="result.json is a symlink on the pod: not fetched"):
        Fetch().run(pod.ctx)
    assert pod.transport.gets == [] and not (pod.run_dir / "result.json").exists()


def test_a_wrong_hash_is_refused_and_leaves_no_file(tmp_path):
    pod = Pod(tmp_path)
    pod.write(GOOD, listed={**_hashes(GOOD), "metrics.jsonl": "0" * 64})
    error = pod.fetch()
    assert "'metrics.jsonl': was not fetched:" in str(error) and "sha256 mismatch" in str(error)
    assert not (pod.run_dir / "metrics.jsonl").exists()


def test_an_entry_without_a_sha256_is_refused(tmp_path):
    pod = Pod(tmp_path)
    pod.write(GOOD, listed={**_hashes(GOOD), "metrics.jsonl": None})
    assert "'metrics.jsonl': has no sha256" in str(pod.fetch())
    assert "metrics.jsonl" not in pod.downloaded()


def test_a_name_that_is_both_a_file_and_a_folder_is_refused(tmp_path):
    pod = Pod(tmp_path)
    pod.write({**GOOD, "plots/a": b"x"}, listed={**_hashes(GOOD), "plots/a": "0" * 64, "plots/a/b": "0" * 64})
    error = pod.fetch()
    assert "'plots/a': is also listed as a folder" in str(error)
    assert "plots/a" not in pod.downloaded()


def test_checkpoints_and_a_listed_result_json_are_skipped_quietly(tmp_path):
    pod = Pod(tmp_path)
    pod.write(GOOD, listed={**_hashes(GOOD), "adapter/checkpoint-5/x": "0" * 64, "result.json": "0" * 64})
    assert pod.fetch() is None
    assert pod.downloaded() == set(GOOD)


def test_max_fetch_mb_must_be_positive():
    cfg = OmegaConf.create({"provider": OmegaConf.structured(LocalProviderConfig)})
    assert Fetch.check_config(cfg) == []
    cfg.provider.max_fetch_mb = 0
    assert Fetch.check_config(cfg) == [("provider.max_fetch_mb", "must be > 0 (got 0.0)")]
