"""engine.providers.runpod_api against the RunPod emulator: the API as it really behaves, not as we wish."""
from __future__ import annotations

import threading
import time

import pytest

from engine.errors import ProviderError
from engine.providers.runpod_api import ApiError, RunPodApi
from tests.conftest import wait_for
from tests.emulator.helpers import RUNPOD_IMAGE
from tests.emulator.pod import WAIT_S

RTX4090 = "NVIDIA GeForce RTX 4090"
CAP_S = 60.0  # the issue: never wait longer than this at a time, whatever Retry-After says


def create(api: RunPodApi, name: str = "lorapod-api-test") -> str:
    body = {"name": name, "image": RUNPOD_IMAGE, "gpu": {"id": RTX4090, "count": 1}, "ports": ["22/tcp"]}
    return api.create_pod(body)["id"]


def returns(call, guard_s: float = WAIT_S * 2):
    """call()'s result; a call still blocked after guard_s fails the test (a hang guard, not a timing)."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(guard_s)
    assert not thread.is_alive(), "the call never returned: it read a stream that never ends"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture
def api(runpod_emulator):
    client = RunPodApi(runpod_emulator.url, runpod_emulator.api_key, timeout_s=5, retry_for_s=10)
    yield client
    client.close()
    for pod in runpod_emulator.live_pods():
        runpod_emulator.terminate(pod.id)


def test_logs_of_a_chatty_pod_return_the_backlog_and_hang_up(runpod_emulator, api):
    emu = runpod_emulator
    pod_id = create(api)
    log = emu.wait_ready(pod_id).log  # port 22 is public: a scanner line about every second, while we listen
    ready = log.last_seq()
    wait_for(lambda: log.last_seq() > ready + 1, WAIT_S, "live lines after the backlog")
    lines = returns(lambda: api.logs(pod_id))
    assert "Pod Started" in lines  # the backlog: the first line of RunPod's start script (its official image)


def test_logs_of_a_quiet_pod_end_at_the_idle_deadline_not_in_an_exception(runpod_emulator, api):
    emu = runpod_emulator
    emu.faults.never_ready = True  # no public port: after the backlog the stream stays open and silent
    pod_id = create(api)
    assert emu.pod(pod_id).log.wait_for("unsatisfied condition")
    lines = returns(lambda: api.logs(pod_id))
    assert any("unsatisfied condition: cuda>=12.8" in line for line in lines)


def test_logs_stop_at_the_byte_cap(runpod_emulator, api):
    emu = runpod_emulator
    emu.faults.never_ready = True
    pod_id = create(api)
    assert emu.pod(pod_id).log.wait_for("unsatisfied condition")
    everything = returns(lambda: api.logs(pod_id))
    capped = returns(lambda: api.logs(pod_id, max_bytes=300))
    assert capped == everything[:len(capped)] and len(capped) < len(everything)


@pytest.fixture
def clock(monkeypatch):
    """time.sleep and time.monotonic as tenacity sees them, made virtual: every sleep asked for is recorded
    and moves the clock on at once, so hours of Retry-After cost nothing and are still seen."""
    real_sleep, real_monotonic = time.sleep, time.monotonic
    state = {"offset": 0.0, "sleeps": []}

    def sleep(seconds: float) -> None:
        if threading.current_thread() is not threading.main_thread():  # the emulator's own pauses
            return real_sleep(seconds)
        state["sleeps"].append(seconds)
        state["offset"] += seconds
        real_sleep(min(seconds, 0.01))

    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + state["offset"])
    return state


def test_a_day_window_429_on_delete_gives_up_within_the_deadline(runpod_emulator, api, clock):
    emu = runpod_emulator
    emu.faults.never_ready = True
    pod_id = create(api)
    emu.faults.rate_limit(count=10_000, retry_after_s=40_000, methods=["DELETE"], window="day")
    with pytest.raises(ApiError) as refused:
        api.delete_pod(pod_id)
    assert max(clock["sleeps"], default=0) <= CAP_S, clock["sleeps"]
    assert sum(clock["sleeps"]) <= api.retry_for_s, clock["sleeps"]
    assert refused.value.status == 429 and "day window" in str(refused.value)
    assert "rate-limiting" in refused.value.hint
    emu.faults.rules.clear()


def test_a_retry_after_past_the_cap_waits_the_cap_then_retries(runpod_emulator, clock):
    emu = runpod_emulator
    api = RunPodApi(emu.url, emu.api_key, timeout_s=5, retry_for_s=600)
    try:
        emu.faults.rate_limit(count=1, retry_after_s=90, methods=["GET"], paths=["/v2/pods"], window="hour")
        assert api.list_pods() == []
    finally:
        api.close()
    assert clock["sleeps"] == [CAP_S]


def test_lists_follow_the_next_cursor(runpod_emulator, api):
    emu = runpod_emulator
    emu.faults.list_lag_s = 0  # about the list's contents, not its lag (tested on its own)
    emu.faults.never_ready = True
    emu.page_size = 2
    made = {create(api, f"lorapod-page-{n}") for n in range(5)}
    assert {p["id"] for p in api.list_pods()} == made
    assert {g["id"] for g in api.gpu_types()} == {offer.id for offer in emu.catalog}
    assert sum(r.template == "/v2/pods" and r.method == "GET" for r in emu.requests) == 3


@pytest.mark.parametrize("url, sent", [
    ("http://api.runpod.io/v2", False),
    ("http://10.0.0.5:8080/v2", False),
    ("ftp://api.runpod.io/v2", False),
    ("https://api.runpod.io/v2", True),
    ("http://127.0.0.1:9/v2", True),
    ("http://localhost:9/v2", True),
    ("http://[::1]:9/v2", True),
])
def test_the_key_goes_only_over_tls_or_to_this_machine(url, sent):
    if not sent:
        with pytest.raises(ProviderError, match="not sending the RunPod API key"):
            RunPodApi(url, "some-key")
    else:
        RunPodApi(url, "some-key").close()
