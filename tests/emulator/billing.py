"""GET /v2/billing/pods (listPodBilling) for the emulator: records per pod per time bucket, from the emulated
pods' real lifetimes and prices.

What the document says (runpod-openapi-v2.json, listPodBilling and its parameters):
- startTime/endTime (RFC 3339) or lastN, with bucketSize (hour, day, week, month, year; default day); lastN is
  "mutually exclusive with startTime/endTime" (both: 400). startTime defaults to 30 days ago and is snapped down
  to its bucket's start; endTime defaults to now, is exclusive, and is snapped up to the end of its bucket
  unless already on a boundary. lastN buckets end with the current, in-progress one.
- podId narrows the records to that pod; without it, one record per pod per bucket.
- A record: startTime, endTime (the bucket), podId, totalAmount, gpuAmount, cpuAmount, diskAmount (USD);
  metadata echoes the resolved query, recordCount, uniquePodCount and totals.

What the emulator adds, each the harsher reading where sources are silent:
- A pod bills while PROVISIONING, STARTING or RUNNING (pod.py BILLED) at its costPerHr, per second; the
  amount is all GPU (disk is not emulated: the document's diskAmount stays 0).
- Billing lags (shared/reference/runpod.md: "gives billed amounts per pod (lags; best effort)"): a second of a
  pod's life shows on its record only `lag_s` after it happened (RunPodEmulator.faults.billing_lag_s). A pod
  deleted a moment ago is billed in part, then in full; a bucket with nothing visible yet has no record.
- Batches (RunPodEmulator.faults.billing_step_s > 0; runpod.md says only that billing lags, not how it catches
  up, so the harsher reading is available to tests): a pod's life shows in whole steps counted from when it
  began billing, each `lag_s` after the step ended, and the part after its last whole step only `step_s +
  lag_s` after it stopped billing. A bill then stands still at a partial amount for at least `step_s` after
  the delete: two reads that agree are not a final bill.
- Buckets are in UTC; week buckets start on Monday (ISO 8601). Amounts are rounded to 6 decimals.
- A malformed parameter: 400 problem+json naming it (the document gives 400 for "a cross-field rule" and
  lists no 422 here).
"""
from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone
from typing import Iterable, Optional

BUCKETS = ("hour", "day", "week", "month", "year")


class BadQuery(ValueError):
    pass


def parse_time(name: str, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadQuery(f"{name}: {text!r} is not an RFC 3339 date-time") from None
    if moment.tzinfo is None:
        raise BadQuery(f"{name}: {text!r} has no time zone (RFC 3339 needs Z or an offset)")
    return moment.astimezone(timezone.utc)


def floor(moment: datetime, bucket: str) -> datetime:
    moment = moment.astimezone(timezone.utc)
    if bucket == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if bucket == "day":
        return day
    if bucket == "week":
        return day - timedelta(days=day.weekday())
    if bucket == "month":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def step(start: datetime, bucket: str) -> datetime:
    """The start of the bucket after the one starting at `start`."""
    if bucket == "hour":
        return start + timedelta(hours=1)
    if bucket == "day":
        return start + timedelta(days=1)
    if bucket == "week":
        return start + timedelta(weeks=1)
    if bucket == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start.replace(year=start.year + 1)


def ceil(moment: datetime, bucket: str) -> datetime:
    start = floor(moment, bucket)
    return start if start == moment else step(start, bucket)


def window(query: dict, now: datetime) -> tuple[datetime, datetime, str]:
    bucket = query.get("bucketSize", "day")
    if bucket not in BUCKETS:
        raise BadQuery(f"bucketSize: {bucket!r} is not one of {', '.join(BUCKETS)}")
    if "lastN" in query:
        if "startTime" in query or "endTime" in query:
            raise BadQuery("lastN is mutually exclusive with startTime/endTime: provide one or the other")
        text = query["lastN"]
        if not text.isdigit() or int(text) < 1:
            raise BadQuery(f"lastN: {text!r} is not an integer >= 1")
        end = step(floor(now, bucket), bucket)
        start = floor(now, bucket)
        for _ in range(int(text) - 1):
            start = floor(start - timedelta(microseconds=1), bucket)
        return start, end, bucket
    start = parse_time("startTime", query["startTime"]) if "startTime" in query else now - timedelta(days=30)
    end = parse_time("endTime", query["endTime"]) if "endTime" in query else now
    start, end = floor(start, bucket), ceil(end, bucket)
    if end <= start:
        raise BadQuery("endTime must be after startTime")
    return start, end, bucket


def published_end(begin: float, end: Optional[float], visible_until: float, step_s: float = 0.0) -> float:
    """Up to when a billed span [begin, end) shows, visible_until being the wall clock less the lag: second by
    second; or, with step_s > 0, in whole steps from begin, and the part after the last whole step only once
    visible_until is step_s past the span's end."""
    if end is not None and end + step_s <= visible_until:
        return end
    shown = visible_until if end is None else min(end, visible_until)
    if step_s > 0 and shown > begin:
        shown = begin + math.floor((shown - begin) / step_s) * step_s
    return shown


def overlap(spans: Iterable[tuple[float, Optional[float]]], lo: float, hi: float, visible_until: float,
            step_s: float = 0.0) -> float:
    """Seconds of the billed spans inside [lo, hi) that billing already shows (see published_end)."""
    total = 0.0
    for begin, end in spans:
        shown = published_end(begin, end, visible_until, step_s)
        total += max(0.0, min(shown, hi) - max(begin, lo))
    return total


def pod_records(pods: Iterable, query: dict, lag_s: float, wall: Optional[float] = None, step_s: float = 0.0) -> dict:
    """The listPodBilling body for these emulated pods (each with id, cost_per_hr and billed_spans)."""
    wall = time.time() if wall is None else wall
    start, end, bucket = window(query, datetime.fromtimestamp(wall, timezone.utc))
    pod_id = query.get("podId")
    visible_until = wall - lag_s
    records = []
    edge = start
    while edge < end:
        nxt = step(edge, bucket)
        for pod in pods:
            if pod_id is not None and pod.id != pod_id:
                continue
            seconds = overlap(pod.billed_spans, edge.timestamp(), nxt.timestamp(), visible_until, step_s)
            if seconds <= 0:
                continue
            amount = round(pod.cost_per_hr * seconds / 3600, 6)
            records.append({"startTime": _iso(edge), "endTime": _iso(nxt), "podId": pod.id,
                            "totalAmount": amount, "gpuAmount": amount, "cpuAmount": 0.0, "diskAmount": 0.0})
        edge = nxt
    totals = {k: round(sum(r[k] for r in records), 6) for k in ("totalAmount", "gpuAmount", "cpuAmount", "diskAmount")}
    return {"records": records,
            "metadata": {"query": {"startTime": _iso(start), "endTime": _iso(end), "bucketSize": bucket,
                                   "podId": pod_id},
                         "recordCount": len(records), "uniquePodCount": len({r["podId"] for r in records}),
                         "totals": totals}}


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
