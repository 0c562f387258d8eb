"""Who may do what: the pod-scoped key in each of its modes (keys.py), the account key, extra keys, and the
GraphQL endpoint a pod's key may be limited to."""
from __future__ import annotations

import sys

import httpx
import pytest
from tests.emulator import RunPodEmulator
from tests.emulator.helpers import alive, api, body, create, graphql, log_events, needs_root, \
    run, ssh, wait_until
from tests.emulator.keys import POD_KEY_MODES
from tests.emulator.pod import WAIT_S

POD = 'query { pod(input: {podId: "%s"}) { id desiredStatus name } }'
TERMINATE = 'mutation { podTerminate(input: {podId: "%s"}) }'
TERMINATE_WITH_VARIABLES = "mutation TerminatePod($input: PodTerminateInput!) { podTerminate(input: $input) }"


def _rest(ok: int, method: str, path: str, **kw):
    """A REST call as a verdict: True when answered `ok`, False when refused (403); anything else fails."""
    def attempt(emu: RunPodEmulator, key: str, pod_id: str) -> bool:
        with api(emu, key=key) as client:
            answer = client.request(method, path.format(pod_id), **kw)
        assert answer.status_code in (ok, 403), answer.text
        return answer.status_code == ok
    return attempt


def _graphql(query: str):
    """A GraphQL call as a verdict: True when answered with data, False when refused (200, `errors`)."""
    def attempt(emu: RunPodEmulator, key: str, pod_id: str) -> bool:
        answer = graphql(emu, query % pod_id, key=key)
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json", answer.text
        if "errors" in answer.json():
            assert answer.json()["data"] is None and answer.json()["errors"][0]["message"].startswith("access denied")
            return False
        return True
    return attempt


# call -> (attempt, whether it terminates the pod)
CALLS = {
    "REST GET": (_rest(200, "GET", "/pods/{}"), False),
    "REST DELETE": (_rest(204, "DELETE", "/pods/{}"), True),
    "REST action terminate": (_rest(204, "POST", "/pods/{}/action", json={"action": "terminate"}), True),
    "REST action stop": (_rest(200, "POST", "/pods/{}/action", json={"action": "stop"}), False),
    "GraphQL pod": (_graphql(POD), False),
    "GraphQL podTerminate": (_graphql(TERMINATE), True),
}
# What the pod key may do on its own pod, in each mode (keys.py gives the sources).
ALLOWED = {
    "graphql": {"GraphQL pod", "GraphQL podTerminate"},
    "rest": {"REST GET", "REST DELETE"},
    "action": {"REST GET", "REST action terminate"},
    "none": set(),
}


def test_the_pod_key_modes_default_to_the_harsher_reading():
    assert RunPodEmulator().pod_key == "graphql"
    assert set(ALLOWED) == set(POD_KEY_MODES)
    with pytest.raises(ValueError, match="pod_key is one of"):
        RunPodEmulator(pod_key="all")


@pytest.mark.parametrize("mode", POD_KEY_MODES)
def test_what_the_pod_key_may_do_is_a_setting_and_the_account_key_does_all(runpod_emulator, mode):
    emu = runpod_emulator
    emu.pod_key = mode
    emu.faults.never_ready = True  # about the API alone: no container needed
    for call, (attempt, terminates) in CALLS.items():
        mine, other = create(emu)["id"], create(emu, name="other")["id"]
        key = emu.pod(mine).key
        assert attempt(emu, key, other) is False, f"{call}: a pod key never reaches another pod"
        allowed = call in ALLOWED[mode]
        assert attempt(emu, key, mine) is allowed, f"{call} with the pod key in mode {mode}"
        if terminates:
            assert (emu.pod(mine).status == "TERMINATED") is allowed, call
        assert attempt(emu, emu.api_key, other) is True, f"{call} with the account key"
        with api(emu) as client:
            for pod in emu.live_pods():
                assert client.delete(f"/pods/{pod.id}").status_code == 204
    with api(emu, key=key) as client:  # the rest of the API is never the pod key's
        assert client.get("/pods").status_code == 403
        assert client.post("/pods", json=body()).status_code == 403
        assert client.get("/catalog/gpus").status_code == 403
        assert log_events(client, mine)[1].status_code == 403
    assert {r.key for r in emu.requests} == {"pod", "account"}
    assert {r.template for r in emu.requests if r.method == "POST" and r.key == "pod"} >= {"/graphql"}


def test_a_pod_key_outlives_its_pod(runpod_emulator):
    emu = runpod_emulator
    emu.faults.never_ready = True
    emu.pod_key = "rest"
    pod_id = create(emu)["id"]
    key = emu.pod(pod_id).key
    with api(emu, key=key) as client:
        assert client.delete(f"/pods/{pod_id}").status_code == 204
        assert client.get(f"/pods/{pod_id}").status_code == 404  # still a valid key: 404, not 401
    emu.pod_key = "graphql"
    assert graphql(emu, POD % pod_id, key=key).json() == {"data": {"pod": None}}
    gone = graphql(emu, TERMINATE % pod_id, key=key)
    assert gone.status_code == 200 and gone.json()["data"] is None
    assert "not found" in gone.json()["errors"][0]["message"]


def test_an_extra_key_reaches_graphql_only_when_allowed(runpod_emulator):
    emu = runpod_emulator
    emu.faults.never_ready = True
    emu.add_key("rpa_READONLY")
    emu.add_key("rpa_WATCHDOG", methods=("GET",), graphql=True)  # e.g. the user's own key for a watchdog
    pod_id = create(emu, name="lorapod-extra")["id"]
    refused = graphql(emu, POD % pod_id, key="rpa_READONLY")
    assert refused.status_code == 200 and refused.json()["data"] is None
    assert refused.json()["errors"][0]["message"].startswith("access denied")
    shown = graphql(emu, POD % pod_id, key="rpa_WATCHDOG").json()
    assert shown == {"data": {"pod": {"id": pod_id, "desiredStatus": "RUNNING", "name": "lorapod-extra"}}}
    with api(emu, key="rpa_WATCHDOG") as client:
        assert client.get(f"/pods/{pod_id}").status_code == 200
        assert client.delete(f"/pods/{pod_id}").status_code == 403
    assert graphql(emu, TERMINATE % pod_id, key="rpa_WATCHDOG").json() == {"data": {"podTerminate": None}}
    assert emu.pod(pod_id).status == "TERMINATED"
    assert {r.key for r in emu.requests if r.template == "/graphql"} == {"extra"}


def test_graphql_takes_the_key_as_a_parameter_or_a_bearer_and_answers_in_its_own_convention(runpod_emulator):
    emu = runpod_emulator
    emu.faults.never_ready = True
    assert emu.graphql_url == emu.url.replace("/v2", "/graphql")
    missing = graphql(emu, POD % "x", key=None)
    wrong_param = graphql(emu, POD % "x", key="rpa_WRONG", how="param")
    wrong_bearer = graphql(emu, POD % "x", key="rpa_WRONG")
    for answer in (missing, wrong_param, wrong_bearer):
        assert answer.status_code == 401 and answer.headers["content-type"] == "application/json"
        assert answer.json()["errors"][0]["message"]
    assert graphql(emu, POD % "nosuchpod", how="param").json() == {"data": {"pod": None}}

    pod_id = create(emu)["id"]
    for query in ("query { myself { id } }", 'mutation { podStop(input: {podId: "%s"}) { id } }' % pod_id,
                  'mutation { pod(input: {podId: "%s"}) { id } }' % pod_id, "{"):
        answer = graphql(emu, query)
        assert answer.status_code == 200 and answer.json()["data"] is None and answer.json()["errors"], query
    malformed = httpx.post(emu.graphql_url, content=b"{", headers={"Authorization": f"Bearer {emu.api_key}"})
    assert malformed.status_code == 200 and malformed.json()["errors"]
    assert httpx.get(emu.graphql_url, params={"api_key": emu.api_key}).status_code == 405

    # A rule aimed at REST paths leaves GraphQL alone; one without paths is the whole API's, GraphQL too
    # (an outage or an account's 429 does not spare /graphql); one may also name "/graphql".
    rest_only = emu.faults.server_errors(count=1, status=503, paths=["/v2/pods/{id}"])
    emu.faults.rate_limit(count=1, retry_after_s=7, window="hour")
    emu.faults.server_errors(count=1, status=502, paths=["/graphql"])
    limited = graphql(emu, POD % pod_id)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert '"hour"' in limited.headers["RateLimit"] and limited.json()["errors"][0]["message"]
    failed = graphql(emu, POD % pod_id)
    assert failed.status_code == 502 and failed.headers["content-type"] == "application/json"
    assert failed.json()["errors"][0]["message"]
    assert graphql(emu, POD % pod_id).json()["data"]["pod"]["desiredStatus"] == "RUNNING"
    assert rest_only.remaining == 1  # never reached GraphQL
    answer = graphql(emu, TERMINATE_WITH_VARIABLES, variables={"input": {"podId": pod_id}}, how="param")
    assert answer.json() == {"data": {"podTerminate": None}} and emu.live_pods() == []

    records = [r for r in emu.requests if r.template == "/graphql"]
    assert [r.key for r in records[:3]] == ["none", "invalid", "invalid"]
    assert all("rpa_" not in r.path for r in records)  # a key in the query string is never kept
    assert records[-1].body["variables"] == {"input": {"podId": pod_id}} and records[-1].status == 200
    assert emu.violations == []  # off the document, not a violation of it


@needs_root
def test_a_pod_terminates_itself_over_graphql_with_the_key_pid_1_holds(runpod_emulator, client_key):
    # What a watchdog on RunPod's official image can do: its SSH session has no RUNPOD_API_KEY, PID 1 has.
    emu = runpod_emulator
    pkey, public = client_key
    pod_id = create(emu, public)["id"]
    pod = emu.wait_ready(pod_id)
    before = pod.machine.processes()
    client = ssh(emu, pod_id, pkey)
    script = (
        "import json, urllib.request\n"
        "env = dict(e.split('=', 1) for e in open('/proc/1/environ').read().split('\\0') if '=' in e)\n"
        f"body = json.dumps({{'query': {TERMINATE!r} % env['RUNPOD_POD_ID']}}).encode()\n"
        f"url = '{emu.graphql_url}?api_key=' + env['RUNPOD_API_KEY']\n"
        "request = urllib.request.Request(url, body, {'Content-Type': 'application/json'})\n"
        "print(urllib.request.urlopen(request, timeout=30).read().decode())\n"
    )
    with client.open_sftp() as sftp, sftp.open("/run/terminate.py", "w") as fh:  # the pod's own /run
        fh.write(script)
    # Detached, as a watchdog runs: the pod dies right after the answer, this session with it.
    run(client, f"setsid nohup {sys.executable} /run/terminate.py >/dev/null 2>&1 </dev/null &")
    assert pod.terminated.wait(WAIT_S), pod.log.text()
    wait_until(lambda: not any(alive(pid) for pid in before), "every process of the pod gone")
    assert pod.machine.processes() == [] and emu.live_pods() == []
    [record] = [r for r in emu.requests if r.template == "/graphql"]
    assert (record.key, record.key_pod, record.status, record.response) == \
        ("pod", pod_id, 200, {"data": {"podTerminate": None}})
    with api(emu) as client_api:
        assert client_api.get(f"/pods/{pod_id}").status_code == 404
