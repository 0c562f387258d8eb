"""GET /v2/billing/pods in the emulator: what the document describes, from the pods' real lifetimes, lagging."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from tests.emulator import billing
from tests.emulator.helpers import api, create, wait_until


def _pod(pod_id: str, cost: float, *spans) -> SimpleNamespace:
    return SimpleNamespace(id=pod_id, cost_per_hr=cost, billed_spans=[list(s) for s in spans])


def _wall(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_records_per_pod_per_bucket_from_real_spans():
    # One pod across an hour boundary (10:50 -> 11:20, $1.20/h), another inside one hour ($0.60/h, 6 minutes).
    a = _pod("a", 1.2, (_wall("2026-06-01T10:50:00Z"), _wall("2026-06-01T11:20:00Z")))
    b = _pod("b", 0.6, (_wall("2026-06-01T11:00:00Z"), _wall("2026-06-01T11:06:00Z")))
    now = _wall("2026-06-01T12:30:00Z")
    body = billing.pod_records([a, b], {"startTime": "2026-06-01T10:15:00Z", "endTime": "2026-06-01T11:30:00Z",
                                        "bucketSize": "hour"}, lag_s=0, wall=now)
    got = {(r["podId"], r["startTime"]): r["totalAmount"] for r in body["records"]}
    assert got == {("a", "2026-06-01T10:00:00Z"): pytest.approx(0.2), ("a", "2026-06-01T11:00:00Z"): pytest.approx(0.4),
                   ("b", "2026-06-01T11:00:00Z"): pytest.approx(0.06)}
    # The window is snapped to bucket boundaries: start down, end up.
    assert body["metadata"]["query"] == {"startTime": "2026-06-01T10:00:00Z", "endTime": "2026-06-01T12:00:00Z",
                                         "bucketSize": "hour", "podId": None}
    assert body["metadata"]["uniquePodCount"] == 2 and body["metadata"]["recordCount"] == 3
    assert body["metadata"]["totals"]["totalAmount"] == pytest.approx(0.66)
    only_b = billing.pod_records([a, b], {"lastN": "3", "bucketSize": "hour", "podId": "b"}, lag_s=0, wall=now)
    assert [r["podId"] for r in only_b["records"]] == ["b"]
    assert only_b["metadata"]["query"]["startTime"] == "2026-06-01T10:00:00Z"  # 10, 11 and the current 12


def test_billing_lags_a_pod_still_running_and_a_second_shows_only_after_the_lag():
    start = _wall("2026-06-01T10:00:00Z")
    pod = _pod("p", 3.6, (start, None))  # $0.001 a second, still billing
    query = {"startTime": "2026-06-01T10:00:00Z", "endTime": "2026-06-01T11:00:00Z", "bucketSize": "hour"}
    assert billing.pod_records([pod], query, lag_s=30, wall=start + 20)["records"] == []
    partial = billing.pod_records([pod], query, lag_s=30, wall=start + 100)["records"]
    assert partial[0]["totalAmount"] == pytest.approx(0.07)


def test_batched_billing_stands_still_at_a_partial_amount_after_the_delete_then_shows_the_whole_life():
    start = _wall("2026-06-01T10:00:00Z")
    pod = _pod("p", 3.6, (start, start + 150))  # $0.001 a second, 150 s of life, deleted at start + 150
    query = {"startTime": "2026-06-01T10:00:00Z", "endTime": "2026-06-01T11:00:00Z", "bucketSize": "hour"}

    def amount(wall):
        records = billing.pod_records([pod], query, lag_s=30, wall=wall, step_s=60)["records"]
        return sum(r["totalAmount"] for r in records)

    assert amount(start + 85) == 0, "the first minute shows only 30 s after it ended"
    assert amount(start + 95) == pytest.approx(0.06)  # one whole minute
    # After the delete: two whole minutes, the same on every read until a step and the lag have passed its end.
    assert amount(start + 155) == amount(start + 239) == pytest.approx(0.12)
    assert amount(start + 240) == pytest.approx(0.15)
    assert amount(start + 240) == billing.pod_records([pod], query, lag_s=30, wall=start + 240)["metadata"][
        "totals"]["totalAmount"], "batches change when, not what, is billed"


@pytest.mark.parametrize("query, says", [
    ({"lastN": "2", "startTime": "2026-06-01T00:00:00Z"}, "mutually exclusive"),
    ({"bucketSize": "minute"}, "bucketSize"),
    ({"startTime": "yesterday"}, "startTime"),
    ({"lastN": "0"}, "lastN"),
])
def test_bad_queries_are_400_naming_the_parameter(runpod_emulator, query, says):
    with api(runpod_emulator) as client:
        answer = client.get("/billing/pods", params=query)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert says in answer.json()["detail"]


def test_a_deleted_pod_is_billed_for_its_life_once_billing_caught_up(runpod_emulator):
    emu = runpod_emulator
    emu.faults.billing_lag_s = 1.0
    pod_id = create(emu, name="lorapod-billed")["id"]
    other = create(emu, name="lorapod-other")["id"]
    price = emu.pod(pod_id).cost_per_hr
    time.sleep(1.5)
    query = {"podId": pod_id, "lastN": "2", "bucketSize": "hour"}
    with api(emu) as client:
        assert client.delete(f"/pods/{pod_id}").status_code == 204
        begin, end = emu.pod(pod_id).billed_spans[0]
        lived = end - begin
        early = sum(r["totalAmount"] for r in client.get("/billing/pods", params=query).json()["records"])
        assert early < price * lived / 3600  # the last second is not billed yet

        def settled():
            body = client.get("/billing/pods", params=query).json()
            return sum(r["totalAmount"] for r in body["records"]) == pytest.approx(price * lived / 3600, abs=2e-6)

        wait_until(settled, "the bill to catch up")
        records = client.get("/billing/pods", params=query).json()["records"]
        assert records and {r["podId"] for r in records} == {pod_id}
        assert client.delete(f"/pods/{other}").status_code == 204
    assert emu.violations == []


def test_the_client_reads_one_pods_records_through_a_server_error(runpod_emulator):
    from engine.providers.runpod_api import RunPodApi

    emu = runpod_emulator
    emu.faults.billing_lag_s = 0.0
    mine, other = create(emu, name="lorapod-mine")["id"], create(emu, name="lorapod-other")["id"]
    time.sleep(0.3)
    emu.faults.read_errors(count=1, status=503, paths=["/v2/billing/pods"])
    client = RunPodApi(emu.url, emu.api_key, timeout_s=5, retry_for_s=10)
    try:
        now = datetime.now(timezone.utc)
        start = now.replace(hour=0, minute=0, second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
        end = (now.replace(microsecond=0) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        records = client.pod_billing(mine, start, end, "hour")
        client.delete_pod(mine)
        client.delete_pod(other)
    finally:
        client.close()
    assert records and {r["podId"] for r in records} == {mine}
    assert sum(r["totalAmount"] for r in records) > 0
    assert [r.status for r in emu.requests if r.template == "/v2/billing/pods"] == [503, 200]
