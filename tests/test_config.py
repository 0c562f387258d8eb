"""The config tree composes as documented, and bad config is refused before anything starts."""
from __future__ import annotations

import pytest

import re
import shutil

import yaml

from tests.conftest import REPO, run_lorapod


def cfg_job(*overrides: str) -> dict:
    run = run_lorapod(*overrides, "--cfg", "job")
    assert run.proc.returncode == 0, run.output
    return yaml.safe_load(run.proc.stdout)


def test_canonical_command_rents_an_rtx5090_with_rank_16():
    cfg = cfg_job("gpu=rtx5090", "lora.r=16")
    assert cfg["provider"]["name"] == "runpod"
    assert cfg["gpu"]["id"] == "NVIDIA GeForce RTX 5090"
    assert cfg["lora"]["r"] == 16


def test_the_canonical_command_deploys_runpods_official_image_and_nothing_of_a_lorapod_namespace():
    run = run_lorapod("gpu=rtx5090", "lora.r=16", "--cfg", "job")  # no RUNPOD_API_KEY: --cfg needs none
    assert run.proc.returncode == 0, run.output
    image = yaml.safe_load(run.proc.stdout)["image"]
    assert (image["name"], image["repository"], image["context"]) == ("runpod", "docker.io/runpod/pytorch", None)
    assert "docker.io/runpod/pytorch" in run.proc.stdout
    assert "docker.io/lorapod" not in run.output


def test_explicit_provider_wins_over_the_gpu_option():
    cfg = cfg_job("gpu=rtx5090", "provider=local")
    assert cfg["provider"]["name"] == "local"
    assert cfg["gpu"]["name"] == "rtx5090"


def test_default_is_the_local_provider_on_cpu_with_the_tiny_model():
    cfg = cfg_job()
    assert (cfg["provider"]["name"], cfg["gpu"]["name"], cfg["model"]["name"]) == ("local", "cpu", "tiny")
    assert list(cfg["pipeline"]["stages"]) == ["prepare", "plan", "budget", "build", "deploy", "probe", "upload",
                                               "train", "fetch", "terminate", "cost", "settle", "plot", "register",
                                               "export", "install"]


def test_every_gpu_option_names_its_runpod_id_vram_and_price():
    for name in ("rtx5090", "rtx4090", "a100_80gb", "h100", "h200"):
        gpu = cfg_job(f"gpu={name}")["gpu"]
        assert gpu["id"].startswith("NVIDIA") and gpu["vram_gb"] > 0 and gpu["price_per_hour"] > 0, name


def test_every_yaml_starts_with_a_comment_showing_its_command():
    files = sorted((REPO / "conf").rglob("*.yaml"))
    assert len(files) >= 15
    for path in files:
        header = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            header.append(line)
        assert any("python run.py" in line for line in header), f"{path} has no launch command comment"


def test_unknown_option_lists_the_valid_ones():
    run = run_lorapod("gpu=rtx9999", "--cfg", "job")
    assert run.proc.returncode != 0
    assert "rtx9999" in run.output and "rtx5090" in run.output and "h100" in run.output


def test_wrong_type_names_the_key():
    run = run_lorapod("lora.r=sixteen", "--cfg", "job")
    assert run.proc.returncode != 0
    assert "lora.r" in run.output


def test_invalid_values_are_all_reported_at_once_and_nothing_starts(run_dir):
    run = run_lorapod("lora.r=0", "lora.dropout=1.5", "train.learning_rate=-1", "train.eval_fraction=1",
                      run_dir=run_dir)
    assert run.proc.returncode == 2, run.output
    for key in ("lora.r", "lora.dropout", "train.learning_rate", "train.eval_fraction"):
        assert re.search(rf"{re.escape(key)}: must .*command line: {re.escape(key)}=", run.output), key
    assert "4 problem(s)" in run.output
    summary = run.summary
    assert summary["status"] == "failed" and summary["failed_stage"] == "config"
    assert set(summary["stages"]) == {"config"}, "no stage may run on a bad config"
    assert not (run_dir / "dataset").exists() and not (run_dir / "pod").exists()


def test_values_from_a_yaml_file_name_that_file(run_dir):
    run = run_lorapod("model=qwen3_8b", "model.id=", run_dir=run_dir)
    assert run.proc.returncode == 2
    assert "model.id: is required when model.source is hub" in run.output


def test_missing_remote_python_names_the_path(run_dir):
    run = run_lorapod("remote.python=/nonexistent/bin/python3", run_dir=run_dir)
    assert run.proc.returncode == 2
    assert "remote.python" in run.output and "/nonexistent/bin/python3" in run.output
    assert "deploy" not in run.summary["stages"]


def test_missing_training_script_names_the_path(run_dir):
    run = run_lorapod("remote.script=/nonexistent/train.py", run_dir=run_dir)
    assert run.proc.returncode == 2
    assert "remote.script" in run.output and "/nonexistent/train.py" in run.output


def test_a_stage_that_cannot_be_imported_is_a_config_error(run_dir):
    run = run_lorapod("+pipeline.stages.extra._target_=no_such_module.Stage", run_dir=run_dir)
    assert run.proc.returncode == 2
    assert "pipeline.stages.extra._target_" in run.output and "no_such_module" in run.output


def test_help_works_without_training_libraries():
    run = run_lorapod("--help")
    assert run.proc.returncode == 0
    assert "provider: local, runpod, ssh" in run.output and "gpu=rtx5090 lora.r=16" in run.output


def test_runpod_without_an_api_key_says_how_to_set_it_and_sends_nothing(run_dir):
    run = run_lorapod("gpu=rtx5090", "provider.api_url=http://127.0.0.1:9/v2", run_dir=run_dir)
    assert run.proc.returncode == 2, run.output
    assert "RUNPOD_API_KEY: is not set: export RUNPOD_API_KEY=" in run.output and ".env" in run.output
    assert set(run.summary["stages"]) == {"config"}


def test_runpod_needs_a_gpu_and_known_fallbacks(run_dir):
    from tests.conftest import fake_key, lorapod_env

    run = run_lorapod("provider=runpod", "gpu.fallbacks=[rtx9999]", "provider.cloud_order=[CHEAP]", run_dir=run_dir,
                      env=lorapod_env(RUNPOD_API_KEY=fake_key("config")))
    assert run.proc.returncode == 2, run.output
    assert "gpu=cpu names no RunPod GPU type" in run.output
    assert "'rtx9999' is not a gpu option" in run.output
    assert "'CHEAP' is not one of COMMUNITY, SECURE" in run.output


def test_runpod_issue_9_settings_are_checked_before_anything_is_rented(run_dir):
    from tests.conftest import fake_key, lorapod_env

    run = run_lorapod("gpu=rtx5090", "provider.api_url=http://127.0.0.1:9/v2", "provider.public_ip_timeout_s=0",
                      "provider.reconcile_s=-1", "provider.network_volume_id=vol_x", "provider.cloud_order=[COMMUNITY]",
                      run_dir=run_dir, env=lorapod_env(RUNPOD_API_KEY=fake_key("config")))
    assert run.proc.returncode == 2, run.output
    assert "provider.public_ip_timeout_s: must be > 0 (got 0" in run.output
    assert "provider.reconcile_s: must be > 0 (got -1" in run.output
    assert "provider.network_volume_id: needs SECURE in provider.cloud_order" in run.output
    assert set(run.summary["stages"]) == {"config"}


def test_every_provider_caps_fetch_and_the_cap_must_be_positive(run_dir):
    assert cfg_job("provider=ssh", "provider.host=box")["provider"]["max_fetch_mb"] == 2048
    assert cfg_job("provider=runpod")["provider"]["max_fetch_mb"] == 2048
    run = run_lorapod("provider.max_fetch_mb=0", run_dir=run_dir)
    assert run.proc.returncode == 2, run.output
    assert "provider.max_fetch_mb: must be > 0 (got 0" in run.output
    assert "command line: provider.max_fetch_mb=0" in run.output
    assert set(run.summary["stages"]) == {"config"}


def test_a_secret_looking_remote_env_is_refused_and_its_value_is_repeated_nowhere(run_dir):
    value = "sEcReT-value-4f1c"
    run = run_lorapod(f"+remote.env.WANDB_API_KEY={value}", f"+remote.env.GITHUB_TOKEN={value}", run_dir=run_dir)
    assert run.proc.returncode == 2, run.output
    for key in ("remote.env.WANDB_API_KEY", "remote.env.GITHUB_TOKEN"):
        assert f"{key}: looks like a secret" in run.output and f"[command line: +{key}=…]" in run.output, key
    assert "lorapod forwards only HF_TOKEN to the pod, through a private file" in run.output
    assert set(run.summary["stages"]) == {"config"}
    assert value not in run.output
    # Hydra wrote .hydra/ before lorapod could look (the message says so); nothing of lorapod's repeats it.
    for path in run_dir.rglob("*"):
        if path.is_file() and ".hydra" not in path.parts:
            assert value not in path.read_text(errors="ignore"), path


@pytest.mark.parametrize("override, says", [
    ("provider.watchdog_api_key_env=LORAPOD_TEST_NEVER_SET",
     "provider.watchdog_api_key_env: names LORAPOD_TEST_NEVER_SET, which is not set"),
    ("provider.watchdog_poll_s=0", "provider.watchdog_poll_s: must be > 0 (got 0"),
])
def test_a_bad_watchdog_setting_is_named_and_costs_no_api_call(runpod_emulator, run_dir, override, says):
    from tests.conftest import fake_key, lorapod_env

    emu = runpod_emulator
    run = run_lorapod("gpu=rtx5090", f"provider.api_url={emu.url}", override, run_dir=run_dir,
                      env=lorapod_env(RUNPOD_API_KEY=fake_key("config")))
    assert run.proc.returncode == 2, run.output
    assert says in run.output and f"command line: {override}" in run.output
    assert set(run.summary["stages"]) == {"config"}
    assert emu.requests == [], "a bad config costs no API call"


# Issue 12: each GPU option carries training presets sized for its memory. Composed with Hydra's compose API:
# the same defaults list `python run.py` composes, without a process per case.
PRESET_KEYS = ("batch_size", "grad_accum", "max_seq_length", "logging_steps")
GPU_OPTIONS = ("rtx4090", "rtx5090", "a100_80gb", "h100", "h200")


def composed(*overrides: str):
    from hydra import compose, initialize_config_dir

    import engine  # noqa: F401  (registers the config schemas)

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def train_of(*overrides: str) -> dict:
    train = composed(*overrides).train
    return {key: train[key] for key in PRESET_KEYS}


def preset_of(option: str) -> dict:
    return dict(yaml.safe_load((REPO / "conf" / "gpu" / f"{option}.yaml").read_text())["train"])


@pytest.mark.parametrize("option", GPU_OPTIONS)
def test_a_gpu_option_brings_its_training_presets_over_train_default(option):
    preset = preset_of(option)
    assert set(preset) == set(PRESET_KEYS), option
    default = train_of()
    assert train_of(f"gpu={option}") == preset
    assert preset != default, "the preset must change what train/default.yaml gives"
    assert preset["logging_steps"] >= 5, "one event per step floods the log at GPU speed"
    # tokens per optimizer step at the ~350 tokens of a typical memory: the issue asks for 8-16k on a GPU
    assert 8_000 <= preset["batch_size"] * preset["grad_accum"] * 350 <= 16_000, option


def test_the_command_line_wins_over_the_gpu_presets_and_the_provider_switch_still_works():
    cfg = composed("gpu=rtx5090", "train.batch_size=2", "train.logging_steps=1")
    assert cfg.train.batch_size == 2 and cfg.train.logging_steps == 1
    assert cfg.train.grad_accum == preset_of("rtx5090")["grad_accum"], "the rest of the preset still applies"
    assert cfg.provider.name == "runpod", "the gpu option's `override /provider: runpod` still applies"
    assert composed("gpu=rtx5090", "provider=local").provider.name == "local"


def test_the_cpu_option_keeps_train_default_so_the_local_run_stays_fast():
    default = yaml.safe_load((REPO / "conf" / "train" / "default.yaml").read_text())
    assert train_of() == train_of("gpu=cpu") == {key: default[key] for key in PRESET_KEYS}
    assert default["batch_size"] * default["grad_accum"] <= 4 and default["logging_steps"] == 1


def test_the_gpu_presets_hold_in_the_real_run_too():
    cfg = cfg_job("gpu=rtx5090", "train.batch_size=2")
    assert {key: cfg["train"][key] for key in PRESET_KEYS} == {**preset_of("rtx5090"), "batch_size": 2}
    assert cfg["provider"]["name"] == "runpod"
    assert {key: cfg_job("gpu=h200", "train.grad_accum=3")["train"][key] for key in PRESET_KEYS} == {
        **preset_of("h200"), "grad_accum": 3}


def test_a_bad_preset_names_the_gpu_option_file_that_set_it(tmp_path, run_dir):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    path = conf / "gpu" / "rtx5090.yaml"
    path.write_text(path.read_text().replace("  batch_size: 8\n", "  batch_size: 0\n"))
    assert "batch_size: 0" in path.read_text()
    run = run_lorapod("--config-path", str(conf), "gpu=rtx5090", "provider=local", run_dir=run_dir)
    assert run.proc.returncode == 2, run.output
    assert "train.batch_size: must be >= 1 (got 0) [conf/gpu/rtx5090.yaml]" in run.output
