"""Secrets never reach a log line, on the console or in run.log."""
from __future__ import annotations

from loguru import logger

from engine import logs
from engine.secrets import load_dotenv, redact
from tests.conftest import fake_key


def test_the_key_is_redacted_everywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RUNPOD_API_KEY", "sk-not-shaped-like-a-key-42")
    logs.setup(tmp_path)
    logger.info("calling with Authorization: Bearer sk-not-shaped-like-a-key-42")
    logger.info(f"a key-shaped string {fake_key('unnamed')} too")
    logger.remove()
    text = (tmp_path / "run.log").read_text() + capsys.readouterr().err
    assert "sk-not-shaped" not in text and fake_key("unnamed") not in text
    assert text.count("***") == 4


def test_dotenv_fills_only_unset_variables(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.setenv("LORAPOD_TEST_KEEP", "from-env")
    env = tmp_path / ".env"
    key = fake_key("fromdotenv")
    env.write_text(f"# comment\nexport RUNPOD_API_KEY='{key}'\nLORAPOD_TEST_KEEP=from-file\n")
    assert load_dotenv(env) == ["RUNPOD_API_KEY"]
    import os

    assert os.environ["LORAPOD_TEST_KEEP"] == "from-env"
    assert redact(f"key {key}") == "key ***"
    monkeypatch.delenv("RUNPOD_API_KEY")


def test_the_key_in_whichever_variable_provider_api_key_env_names_is_redacted(tmp_path, monkeypatch, capsys):
    from hydra import compose, initialize_config_dir

    from engine import secrets
    from engine.context import PROJECT_ROOT, RunContext
    from engine.providers.base import make_provider
    from engine.state import RunState

    monkeypatch.setattr(secrets, "SECRET_NAMES", list(secrets.SECRET_NAMES))  # what this test adds goes with it
    monkeypatch.setenv("LORAPOD_TEST_OTHER_KEY", "sk-other-not-shaped-like-a-key-77")
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["gpu=rtx5090", "provider.api_key_env=LORAPOD_TEST_OTHER_KEY"])
    logs.setup(tmp_path)
    make_provider(RunContext(cfg=cfg, run_dir=tmp_path, state=RunState(run_id="redact")))
    logger.info("calling with Authorization: Bearer sk-other-not-shaped-like-a-key-77")
    logger.remove()
    text = (tmp_path / "run.log").read_text() + capsys.readouterr().err
    assert "sk-other-not-shaped" not in text and "Bearer ***" in text
