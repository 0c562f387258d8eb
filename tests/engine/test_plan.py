"""The plan's arithmetic: steps, dollars, memory fit, and measured throughput replacing the table's guess."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from engine.compose import jobs
from engine.errors import ConfigError
from engine.plan import estimate, memory, throughput
from engine.validate import validate
from stages.plan import Plan

GPUS = ("rtx5090", "rtx4090", "a100_80gb", "h100", "h200")


def compose(*overrides: str):
    [(_, cfg)] = jobs(list(overrides), multirun=False)
    with open_dict(cfg):
        cfg.pop("hydra")
    return cfg


def write_dataset(folder: Path, train: int, evals: int, text: str = "x" * 350) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"train": train, "eval": evals}))
    row = {"messages": [{"role": "user", "content": "q" * 70}, {"role": "assistant", "content": text}]}
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for _ in range(train)))
    return folder


@pytest.mark.parametrize("gpu", GPUS)
@pytest.mark.parametrize("model", ["qwen3_8b", "llama3_1_8b", "qwen3_0_6b"])
def test_every_shipped_model_fits_every_gpu_at_its_presets(gpu, model):
    cfg = compose(f"gpu={gpu}", f"model={model}")
    fit = memory.fit(cfg, OmegaConf.to_container(cfg.gpu))
    assert fit is not None and fit.fits, fit.as_dict()
    assert Plan.check_config(cfg) == []


def test_the_8b_weights_in_4bit_are_about_6_gb_and_bf16_about_16():
    cfg = compose("gpu=rtx5090", "model=qwen3_8b")
    shape = memory.Shape.of(cfg.model)
    assert 8.1e9 < shape.params() < 8.3e9  # Qwen3-8B: 8.19B parameters
    four = memory.fit(cfg, OmegaConf.to_container(cfg.gpu)).parts["weights"]
    bf16 = memory.fit(cfg, OmegaConf.to_container(cfg.gpu), load_in_4bit=False).parts["weights"]
    assert 5 < four < 7 and 14.5 < bf16 < 16


def test_a_config_that_does_not_fit_is_refused_naming_the_settings_to_change():
    cfg = compose("gpu=rtx4090", "model=qwen3_8b", "train.batch_size=32")
    [(key, rule)] = Plan.check_config(cfg)
    assert key == "train.batch_size"
    for fix in ("train.batch_size=4", "train.max_seq_length=", "gpu=a100_80gb"):
        assert fix in rule, rule
    with pytest.raises(ConfigError) as exc:
        validate(cfg)
    assert "does not fit" not in str(exc.value) and "needs ~" in str(exc.value)


def test_bf16_that_does_not_fit_names_load_in_4bit():
    cfg = compose("gpu=rtx4090", "model=qwen3_8b", "model.load_in_4bit=false")
    [(_, rule)] = Plan.check_config(cfg)
    assert "model.load_in_4bit=true" in rule, rule


def test_cpu_and_shapeless_models_are_not_judged():
    assert memory.fit(compose(), {"name": "cpu", "vram_gb": 0, "count": 0}) is None
    cfg = compose("gpu=rtx5090")
    with open_dict(cfg):
        cfg.model.shape = None
    assert memory.fit(cfg, OmegaConf.to_container(cfg.gpu)) is None


def test_steps_from_examples_epochs_and_batch_or_max_steps():
    cfg = compose("gpu=rtx5090", "train.epochs=2")  # presets: 8 x 4 = 32 examples a step
    assert estimate.training_steps(cfg, 141) == 9  # ceil(141 x 2 / 32)
    assert estimate.training_steps(compose("gpu=rtx5090", "train.max_steps=60"), 141) == 60
    assert estimate.training_steps(compose("gpu=rtx5090", "gpu.count=2"), 141) == 3  # ceil(141 / 64)
    assert estimate.training_steps(cfg, None) is None


def test_dollars_are_minutes_times_price_for_each_candidate(tmp_path):
    cfg = compose("gpu=rtx5090", "model=qwen3_8b")
    stats = estimate.dataset_stats(write_dataset(tmp_path / "ds", 640, 64), cfg)
    assert stats["train"] == 640 and 100 < stats["tokens_per_example"] < 200
    plan = estimate.plan(cfg, stats, tmp_path / "no-runs")
    names = [c["gpu"] for c in plan["candidates"]]
    assert names == ["rtx5090", "rtx4090"]  # the gpu and its fallback
    for c in plan["candidates"]:
        assert c["usd_high"] == pytest.approx(c["minutes_high"] / 60 * c["price_per_hour"], abs=1e-3)
        assert 0 < c["usd_low"] < c["usd_high"]
        assert sum(p["high"] for p in c["phases"]) == pytest.approx(c["minutes_high"], abs=0.05)
    assert plan["usd_high"] == max(c["usd_high"] for c in plan["candidates"])
    assert plan["max_price_per_hour"] == 0.74 and plan["fits"] is True and plan["steps"] == 20
    # more data, more training minutes
    bigger = estimate.plan(cfg, {**stats, "train": 6400}, tmp_path / "no-runs")
    assert bigger["minutes_high"] > plan["minutes_high"]
    # cheapest_first (preflight): the gpu alone
    only = compose("gpu=rtx5090", "model=qwen3_8b", "pipeline.cheapest_first=true")
    assert [c["gpu"] for c in estimate.plan(only, stats, tmp_path)["candidates"]] == ["rtx5090"]


def test_this_machine_costs_nothing(tmp_path):
    cfg = compose()
    plan = estimate.plan(cfg, estimate.dataset_stats(write_dataset(tmp_path / "ds", 10, 2), cfg), tmp_path)
    assert plan["usd_high"] == 0 and plan["candidates"][0]["memory"] is None and plan["fits"] is True


def summary_with(folder: Path, record: dict) -> Path:
    folder.mkdir(parents=True)
    path = folder / "run-summary.json"
    path.write_text(json.dumps({"status": "succeeded", "throughput": record}))
    return path


def test_a_measured_run_replaces_the_table_number(tmp_path):
    cfg = compose("gpu=rtx5090", "model=qwen3_8b")
    runs = tmp_path / "runs"
    table = throughput.rate(cfg, "rtx5090", runs)
    assert table.source.startswith("table") and table.tokens_per_s == cfg.plan.tokens_per_s.rtx5090.qwen3_8b
    old = summary_with(runs / "multirun" / "2026-01-01" / "0", {"gpu": "rtx5090", "model": "qwen3_8b",
                                                                 "tokens_per_s": 1500.0, "steps": 40})
    os.utime(old, (1_000_000, 1_000_000))
    summary_with(runs / "2026-02-01" / "10-00-00", {"gpu": "rtx5090", "model": "qwen3_8b", "tokens_per_s": 3000.0,
                                                      "steps": 12})
    summary_with(runs / "2026-03-01" / "10-00-00", {"gpu": "rtx5090", "model": "qwen3_0_6b", "tokens_per_s": 9e4,
                                                      "steps": 5})  # another model: not this one's measure
    os.utime(runs / "2026-02-01" / "10-00-00" / "run-summary.json", (2_000_000, 2_000_000))
    got = throughput.rate(cfg, "rtx5090", runs)
    assert got.tokens_per_s == 3000.0 and got.source.startswith("measured") and "2026-02-01/10-00-00" in got.source
    # the plan uses it, with the narrower spread, and says so
    stats = {"train": 640, "eval": 0, "tokens_per_example": 300.0}
    first = estimate.plan(cfg, stats, runs)["candidates"][0]
    assert first["s_per_step"] == pytest.approx(32 * 300 / 3000.0, rel=1e-3)
    assert first["throughput_source"].startswith("measured")
    assert estimate.plan(cfg, stats, runs)["candidates"][1]["throughput_source"].startswith("table")  # rtx4090


def test_a_finished_run_records_what_it_measured():
    cfg = compose("gpu=rtx5090", "model=qwen3_8b")
    result = {"status": "succeeded", "steps": 10, "world_size": 1,
              "throughput": {"trained_tokens": 100_000, "tokens_per_s": 2000.0, "gpu": "NVIDIA GeForce RTX 5090"}}
    record = throughput.measured(cfg, result)
    assert record["gpu"] == "rtx5090" and record["model"] == "qwen3_8b"
    assert record["s_per_step"] == 5.0 and record["tokens_per_step"] == 10_000 and record["examples_per_step"] == 32
    assert throughput.measured(cfg, {**result, "status": "failed"}) is None
    assert throughput.measured(cfg, {**result, "steps": 0}) is None


def test_bad_plan_numbers_are_refused_by_key():
    cfg = compose("plan.spread_table=0.5", "plan.vram_usable_fraction=1.5")
    keys = {k for k, _ in Plan.check_config(cfg)}
    assert keys == {"plan.spread_table", "plan.vram_usable_fraction"}


def test_only_a_pipeline_that_rents_needs_the_providers_key():
    from engine.stage import pipeline_rents

    assert pipeline_rents(compose("gpu=rtx5090")) and pipeline_rents(compose("gpu=rtx5090", "pipeline=preflight"))
    assert not pipeline_rents(compose("gpu=rtx5090", "pipeline=plan"))
    assert not pipeline_rents(compose("gpu=rtx5090", "pipeline=prepare"))
    assert pipeline_rents(compose("pipeline=plan", "+pipeline.stages.x._target_=no_such.Stage"))  # harsher reading
