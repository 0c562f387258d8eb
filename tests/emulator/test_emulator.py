"""The RunPod emulator itself: every endpoint and every fault, each response checked against the OpenAPI document
(the fixture fails a test whose responses broke it), pods as real sshds reached with paramiko."""
from __future__ import annotations

import getpass
import re
import socket
import subprocess
from pathlib import Path

import httpx
import paramiko
import pytest
from tests.emulator import CAPACITY_DETAIL, CAPACITY_DETAILS, POOL_FORBIDDEN_DETAIL, RunPodEmulator, openapi
from tests.emulator.helpers import (LORAPOD_IMAGE, RTX4090, RTX5090, RUNPOD_IMAGE, alive, api,
                                    backlog, body, create, host_keys, log_events, needs_root,
                                    pinned_host_keys, refused, run, ssh, wait_until)
from tests.emulator.pod import WAIT_S


# ---------------------------------------------------------------------------------------------- the document

def test_the_documents_own_examples_validate_and_broken_bodies_do_not():
    pod = openapi.example_body("GET", "/v2/pods/{id}", 200)
    openapi.validate_response("GET", "/v2/pods/{id}", 200, pod, content_type="application/json")
    openapi.validate_response("GET", "/v2/pods", 200, openapi.example_body("GET", "/v2/pods", 200))
    del pod["status"]
    with pytest.raises(openapi.OpenApiViolation, match="'status' is a required property"):
        openapi.validate_response("GET", "/v2/pods/{id}", 200, pod)
    with pytest.raises(openapi.OpenApiViolation, match="content type"):
        openapi.validate_response("GET", "/v2/pods/{id}", 404, {"title": "x", "status": 404, "detail": "y"},
                                  content_type="application/json")
    with pytest.raises(openapi.OpenApiViolation, match="no body"):
        openapi.validate_response("DELETE", "/v2/pods/{id}", 204, {"id": "x"})
    with pytest.raises(openapi.OpenApiViolation, match="Retry-After"):
        openapi.validate_response("GET", "/v2/pods", 429, {"title": "x", "status": 429, "detail": "y"}, headers={})
    assert openapi.request_errors("CreatePodRequest", body()) == []
    assert openapi.request_errors("CreatePodRequest", body(gpu={"id": RTX5090, "minCudaVersion": "12"}))


def test_a_response_that_breaks_the_document_is_recorded(runpod_emulator, monkeypatch):
    emu = runpod_emulator
    pod_id = create(emu)["id"]
    original = type(emu.pod(pod_id)).to_json
    monkeypatch.setattr(type(emu.pod(pod_id)), "to_json", lambda self: {**original(self), "cost": "free"})
    with api(emu) as client:
        assert client.get(f"/pods/{pod_id}").status_code == 200
    assert len(emu.violations) == 1 and "/cost: 'free' is not of type 'number'" in emu.violations[0]
    with pytest.raises(AssertionError, match="is not of type"):
        emu.assert_clean()
    emu.violations.clear()
    monkeypatch.undo()
    with api(emu) as client:
        assert client.delete(f"/pods/{pod_id}").status_code == 204


# ---------------------------------------------------------------------------------------------- auth

def test_a_missing_or_wrong_key_is_401_and_a_limited_key_403(runpod_emulator):
    emu = runpod_emulator
    emu.add_key("rpa_READONLY", methods=["GET"])
    with api(emu, key=None) as client:
        missing = client.get("/pods")
    with api(emu, key="rpa_WRONG") as client:
        wrong = client.post("/pods", json=body())
    with api(emu, key="rpa_READONLY") as client:
        read = client.get("/pods")
        write = client.post("/pods", json=body())
    assert (missing.status_code, wrong.status_code, read.status_code, write.status_code) == (401, 401, 200, 403)
    for answer in (missing, wrong, write):
        assert answer.headers["content-type"] == "application/problem+json"
        assert set(answer.json()) >= {"title", "status", "detail"}
    assert [r.key for r in emu.requests] == ["none", "invalid", "extra", "extra"]
    assert not emu.pods


# ---------------------------------------------------------------------------------------------- create

def test_create_records_what_the_client_sent(runpod_emulator, client_key):
    emu = runpod_emulator
    sent = body(gpu={"id": RTX5090, "count": 2, "allowedCudaVersions": ["12.8"]}, cloud="SECURE", disk=77,
                ports=["22/tcp", "8888/http"], env={"LORAPOD_MAX_RUNTIME_S": "3600", "A": "b"},
                mounts={"network": [{"volumeId": "vol1", "path": "/workspace"}]}, dataCenterIds=["EU-RO-1"])
    with api(emu) as client:
        answer = client.post("/pods", json=sent)
    assert answer.status_code == 201
    pod = answer.json()
    assert pod["status"] == "PROVISIONING" and pod["runtime"] is None and pod["ssh"]["direct"] is None
    assert (pod["image"], pod["gpu"], pod["cloud"], pod["disk"], pod["ports"], pod["env"], pod["mounts"]) == (
        sent["image"], {"id": RTX5090, "count": 2}, "SECURE", 77, sent["ports"], sent["env"], sent["mounts"])
    assert (pod["dataCenterId"], pod["cudaVersion"], pod["cost"]) == ("EU-RO-1", "12.8", pytest.approx(2 * 0.94))
    assert emu.pod(pod["id"]).request == sent
    assert emu.requests[-1].body == sent and emu.requests[-1].key == "account"
    with api(emu) as client:
        assert client.delete(f"/pods/{pod['id']}").status_code == 204


@pytest.mark.parametrize("change, status, says", [
    ({"bogus": 1}, 422, "'bogus' was unexpected"),
    ({"gpu": {"id": RTX5090, "vram": 32}}, 422, "'vram' was unexpected"),
    ({"image": None}, 422, "None is not of type 'string'"),
    ({"disk": 0}, 422, "0 is less than the minimum of 1"),
    ({"gpu": {"id": "NVIDIA GeForce GTX 1080"}}, 400, "GET /v2/catalog/gpus lists the valid ids"),
    ({"gpu": {"id": RTX5090, "allowedCudaVersions": ["12.8"], "minCudaVersion": "12.8"}}, 400, "mutually exclusive"),
    ({"gpu": {"id": RTX5090, "count": 9}}, 400, "exceeds"),
    ({"gpu": {"id": RTX5090, "allowedCudaVersions": ["12.4"]}}, 400, CAPACITY_DETAIL),
    ({"gpu": {"id": "NVIDIA H200"}, "cloud": "COMMUNITY"}, 400, "not offered on COMMUNITY cloud"),
    ({"cloud": "COMMUNITY", "mounts": {"network": [{"volumeId": "vol_x", "path": "/workspace"}]}}, 400,
     "only be attached to SECURE cloud pods"),
    ({"cpu": {"id": "cpu3c", "vcpuCount": 2}}, 400, "exactly one of gpu or cpu"),
    ({"templateId": "tpl1"}, 404, "template tpl1 not found"),
])
def test_create_refuses_bad_requests(runpod_emulator, change, status, says):
    with api(runpod_emulator) as client:
        answer = client.post("/pods", json=body(**change))
    assert answer.status_code == status, answer.text
    problem = answer.json()
    assert problem["status"] == status and says in problem["detail"] + " ".join(problem.get("errors", []))
    assert not runpod_emulator.pods


def test_create_without_an_image_or_a_name_is_a_contract_violation(runpod_emulator):
    request = body()
    del request["image"], request["name"]
    with api(runpod_emulator) as client:
        answer = client.post("/pods", json=request)
    assert answer.status_code == 422
    assert sorted(answer.json()["errors"]) == ["/: 'image' is a required property", "/: 'name' is a required property"]


# ---------------------------------------------------------------------------------------------- lifecycle

def test_lifecycle_running_is_not_ready_until_ports_are_published(runpod_emulator):
    emu = runpod_emulator
    emu.faults.list_lag_s = 0  # about the list's contents, not its lag (tested on its own)
    emu.provisioning_s = emu.ports_after_running_s = float("inf")  # each phase held until the test moves on
    pod_id = create(emu)["id"]
    pod = emu.pod(pod_id)

    def seen() -> dict:
        with api(emu) as client:
            return client.get(f"/pods/{pod_id}").json()

    assert (seen()["status"], seen()["actions"]) == ("PROVISIONING", ["stop", "terminate"])
    pod.provisioning_s = 0
    running = wait_until(lambda: (lambda p: p if p["status"] == "RUNNING" else None)(seen()), "RUNNING")
    assert running["runtime"] is None and running["ssh"]["direct"] is None  # RUNNING alone is not ready
    assert running["actions"] == ["stop", "restart", "terminate"] and running["cost"] > 0
    assert running["startedAt"] is not None

    pod.ports_after_running_s = 0
    ready = wait_until(lambda: (lambda p: p if p["runtime"] else None)(seen()), "runtime published")
    udp, tcp = ready["runtime"]["ports"]
    assert (udp["private"], udp["type"], tcp["private"], tcp["type"]) == (22, "udp", 22, "tcp")
    assert udp["public"] != tcp["public"] and tcp["ip"] == "127.0.0.1"
    assert ready["ssh"]["direct"] == {"host": "127.0.0.1", "port": tcp["public"], "username": getpass.getuser(),
                                      "command": f"ssh {getpass.getuser()}@127.0.0.1 -p {tcp['public']}"}
    assert tcp["public"] == pod.proxy.port != pod.machine.sshd_port
    with api(emu) as client:
        assert [p["id"] for p in client.get("/pods").json()["pods"]] == [pod_id]
        assert client.delete(f"/pods/{pod_id}").status_code == 204
        assert client.get(f"/pods/{pod_id}").status_code == 404
        assert client.get("/pods").json() == {"pods": []}
        assert client.delete(f"/pods/{pod_id}").status_code == 404
    assert pod.status == "TERMINATED" and pod.to_json()["cost"] == 0 and not emu.live_pods()
    billed = pod.billed_s()
    assert billed > 0 and pod.billed_s() == billed  # billing stopped with the pod


def test_without_22_tcp_there_is_no_direct_ssh(runpod_emulator):
    emu = runpod_emulator
    pod_id = create(emu, ports=["8888/http"])["id"]
    pod = emu.wait_ready(pod_id).to_json()
    assert pod["status"] == "RUNNING" and pod["runtime"]["ports"] == [] and pod["ssh"]["direct"] is None
    with api(emu) as client:
        assert client.delete(f"/pods/{pod_id}").status_code == 204


# ---------------------------------------------------------------------------------------------- SSH

@needs_root
def test_ssh_login_pins_the_host_keys_start_sh_logged(runpod_emulator, client_key):
    emu = runpod_emulator
    pkey, public = client_key
    pod_id = create(emu, public, image=LORAPOD_IMAGE)["id"]
    pod = emu.wait_ready(pod_id)
    assert pod.image_kind == "lorapod"
    pinned = pinned_host_keys(emu, pod_id)
    assert sorted(pinned) == ["ecdsa-sha2-nistp256", "ssh-ed25519", "ssh-rsa"]  # start.sh's three
    assert pinned["ssh-ed25519"] == subprocess.run(
        ["ssh-keygen", "-lf", str(pod.machine.host_key) + ".pub"], capture_output=True, text=True,
        check=True).stdout.split()[1]

    client = ssh(emu, pod_id, pkey, pinned)
    assert run(client, "whoami").strip() == getpass.getuser()
    with client.open_sftp() as sftp:  # the transport's file transfers go through the sftp subsystem
        assert sftp.stat(str(pod.machine.authorized_keys)).st_size > 0
    client.close()

    with pytest.raises(paramiko.SSHException, match="is not pinned"):
        ssh(emu, pod_id, pkey, {"ssh-ed25519": "SHA256:somebodyElse"})
    with pytest.raises(paramiko.AuthenticationException):
        ssh(emu, pod_id, paramiko.RSAKey.generate(2048), pinned)
    transport = paramiko.Transport(("127.0.0.1", pod.proxy.port))
    try:
        transport.start_client(timeout=WAIT_S)
        with pytest.raises(paramiko.BadAuthenticationType) as offered:
            transport.auth_none(getpass.getuser())
        assert offered.value.allowed_types == ["publickey"]
    finally:
        transport.close()
    with api(emu) as client:
        assert client.delete(f"/pods/{pod_id}").status_code == 204


@needs_root
def test_without_a_public_key_runpods_image_starts_no_sshd_and_lorapods_refuses_to_start(runpod_emulator, client_key):
    emu = runpod_emulator
    pod_id = create(emu)["id"]
    pod = emu.wait_ready(pod_id)  # RunPod publishes the port whatever listens behind it
    assert "Setting up SSH..." not in pod.log.text() and not list(pod.machine.ssh_dir.iterdir())
    with pytest.raises((paramiko.SSHException, OSError, EOFError)):
        ssh(emu, pod_id, client_key[0], pinned={})  # nothing listens: the connection is reset

    lorapod = emu.pod(create(emu, image=LORAPOD_IMAGE)["id"])
    wait_until(lambda: emu.errors, "the lorapod container's failed boot reported")
    assert not lorapod.ready and "neither SSH_PUBLIC_KEY nor PUBLIC_KEY is set" in lorapod.log.text()
    assert "podinit: start.sh exited with status 1" in lorapod.log.text()
    assert emu.errors.pop().startswith(f"pod {lorapod.id}: sshd did not start (the container exited)")
    with api(emu) as client:
        for pod in emu.live_pods():
            assert client.delete(f"/pods/{pod.id}").status_code == 204


@needs_root
@pytest.mark.parametrize("image", [RUNPOD_IMAGE, LORAPOD_IMAGE])
def test_several_public_keys_all_log_in(runpod_emulator, client_key, image):
    emu = runpod_emulator
    pkey, public = client_key
    other = paramiko.ECDSAKey.generate()
    both = f"{other.get_name()} {other.get_base64()} other@host\n{public}"
    pod_id = create(emu, env={"PUBLIC_KEY": both, "SSH_PUBLIC_KEY": public}, image=image)["id"]
    pod = emu.wait_ready(pod_id)
    assert set(pod.machine.authorized_keys.read_text().splitlines()) == {public.strip(), both.splitlines()[0]}
    for key in (pkey, other):
        client = ssh(emu, pod_id, key)
        assert run(client, "echo in").strip() == "in"
        client.close()
    with api(emu) as client_api:
        assert client_api.delete(f"/pods/{pod_id}").status_code == 204


@needs_root
def test_delete_kills_sshd_and_everything_the_pod_started(runpod_emulator, client_key):
    emu = runpod_emulator
    pkey, public = client_key
    pod_id = create(emu, public)["id"]
    pod = emu.wait_ready(pod_id)
    client = ssh(emu, pod_id, pkey)
    marker = f"lorapod-detached-{pod_id}"
    run(client, f"setsid nohup bash -c 'exec -a {marker} sleep 600' >/dev/null 2>&1 </dev/null &")
    detached = wait_until(lambda: [p for p in pod.machine.processes()
                                   if marker in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")],
                          "the detached process")
    sshd_port, public_port = pod.machine.sshd_port, pod.proxy.port
    before = pod.machine.processes()
    assert len(before) >= 4  # podinit, sshd, the session's sshd, the detached sleep

    with api(emu) as client_api:
        assert client_api.delete(f"/pods/{pod_id}").status_code == 204
    assert refused(public_port)  # the public port closes before DELETE answers
    wait_until(lambda: not any(alive(p) for p in before), "every process of the pod gone")
    assert refused(sshd_port) and not alive(detached[0])
    with pytest.raises((paramiko.SSHException, OSError, EOFError)):
        run(client, "true")
    client.close()
    assert pod.machine.processes() == [] and emu.live_pods() == []


@needs_root
def test_stop_start_and_restart(runpod_emulator, client_key):
    emu = runpod_emulator
    emu.faults.list_lag_s = 0  # about the list's contents, not its lag (tested on its own)
    pkey, public = client_key
    pod_id = create(emu, public)["id"]
    emu.wait_ready(pod_id)
    pinned = host_keys(emu, pod_id)
    first_port = emu.pod(pod_id).proxy.port
    with api(emu) as client:
        assert client.post(f"/pods/{pod_id}/action", json={"action": "start"}).status_code == 409
        assert client.post(f"/pods/{pod_id}/action", json={"action": "pause"}).status_code == 422
        assert client.post(f"/pods/{pod_id}/action", json={"action": "stop", "now": True}).status_code == 422
        stopped = client.post(f"/pods/{pod_id}/action", json={"action": "stop"})
        assert stopped.status_code == 200
        assert (stopped.json()["status"], stopped.json()["cost"], stopped.json()["actions"],
                stopped.json()["runtime"]) == ("EXITED", 0, ["start", "terminate"], None)
        assert [p["status"] for p in client.get("/pods").json()["pods"]] == ["EXITED"]  # a stopped pod is listed
        assert client.post(f"/pods/{pod_id}/action", json={"action": "restart"}).status_code == 409
        wait_until(lambda: emu.pod(pod_id).machine.processes() == [], "the stopped pod's processes gone")
        assert refused(first_port)

        started = client.post(f"/pods/{pod_id}/action", json={"action": "start"})
        assert started.status_code == 200 and started.json()["status"] == "STARTING"
        pod = emu.wait_ready(pod_id)
        assert pod.proxy.port != first_port  # a started pod gets a new public port
        run(ssh(emu, pod_id, pkey, pinned), "true")  # same host key after a stop and start

        port = pod.proxy.port
        restarted = client.post(f"/pods/{pod_id}/action", json={"action": "restart"})
        assert restarted.status_code == 200 and restarted.json()["runtime"] is None
        pod = emu.wait_ready(pod_id)
        assert pod.proxy.port == port
        run(ssh(emu, pod_id, pkey, pinned), "true")
        assert client.post(f"/pods/{pod_id}/action", json={"action": "terminate"}).status_code == 204
        assert client.post(f"/pods/{pod_id}/action", json={"action": "terminate"}).status_code == 404
    assert emu.live_pods() == []


# ---------------------------------------------------------------------------------------------- logs, catalog

def test_logs_are_server_sent_events_that_can_be_resumed(runpod_emulator):
    emu = runpod_emulator
    emu.scanner_interval_s = None  # a quiet pod: each request's backlog is exactly the log so far
    pod_id = create(emu)["id"]
    emu.wait_ready(pod_id)
    with api(emu) as client:
        events, everything = log_events(client, pod_id, count=backlog(emu, pod_id))
        assert everything.headers["content-type"] == "text/event-stream"
        assert everything.headers["cache-control"] == "no-cache"
        assert everything.headers["connection"] == "keep-alive"
        payloads = [e["payload"] for e in events]
        assert [e["id"] for e in events] == [f"{p['ts']}/{n}" for n, p in enumerate(payloads, 1)]
        assert payloads[0]["source"] == "system" and "Pulling" in payloads[0]["line"]
        assert any(p["source"] == "container" and p["line"] == "Pod Started" for p in payloads)  # RunPod's image

        last_two, _ = log_events(client, pod_id, count=2, tail=2)
        assert [e["payload"] for e in last_two] == payloads[-2:]
        resumed, _ = log_events(client, pod_id, count=len(payloads) - 3, headers={"Last-Event-ID": events[2]["id"]})
        assert [e["payload"] for e in resumed] == payloads[3:]
        system_count = sum(p["source"] == "system" for p in payloads)
        system, _ = log_events(client, pod_id, count=system_count, source="system")
        assert system and {e["payload"]["source"] for e in system} == {"system"}
        assert log_events(client, pod_id, tail=9999)[1].status_code == 422
        assert log_events(client, "nosuchpod")[1].status_code == 404
        assert client.delete(f"/pods/{pod_id}").status_code == 204
        assert log_events(client, pod_id)[1].status_code == 404


def test_the_log_stream_stays_open_and_a_public_port_22_brings_a_line_about_every_second(runpod_emulator):
    emu = runpod_emulator
    emu.scanner_interval_s = 0.05  # the default is about one a second; faster here, same behaviour
    pod_id = create(emu)["id"]
    emu.wait_ready(pod_id)
    with api(emu) as client:
        past = backlog(emu, pod_id, tail=0)
        events, _ = log_events(client, pod_id, count=3, tail=0)  # no backlog: only lines that come later
        assert all(int(e["id"].rsplit("/", 1)[1]) > past for e in events)
        assert all(re.search(r"\b(192\.0\.2|198\.51\.100|203\.0\.113)\.\d+ port \d+", e["payload"]["line"])
                   for e in events)
        assert client.delete(f"/pods/{pod_id}").status_code == 204


def test_lists_come_in_pages_when_a_page_size_is_set(runpod_emulator):
    emu = runpod_emulator
    emu.faults.list_lag_s = 0  # about the list's contents, not its lag (tested on its own)
    emu.faults.never_ready = True  # no sshd needed to be listed
    emu.page_size = 2
    with api(emu) as client:
        made = {create(emu, name=f"lorapod-page-{n}")["id"] for n in range(5)}
        seen, cursor, pages = set(), None, 0
        while True:
            answer = client.get("/pods", params={"cursor": cursor} if cursor else None).json()
            seen |= {p["id"] for p in answer["pods"]}
            pages += 1
            cursor = (answer.get("pagination") or {}).get("nextCursor")
            if not cursor:
                break
        assert (seen, pages) == (made, 3)
        gpus = client.get("/catalog/gpus").json()
        assert len(gpus["gpus"]) == 2 and gpus["pagination"]["nextCursor"]
        assert client.get("/pods", params={"cursor": "made-up"}).status_code == 400
        for pod_id in made:
            assert client.delete(f"/pods/{pod_id}").status_code == 204


def test_catalog_lists_gpu_types_with_prices_and_stock_on_request(runpod_emulator):
    emu = runpod_emulator
    with api(emu) as client:
        plain = client.get("/catalog/gpus").json()["gpus"]
        stocked = client.get("/catalog/gpus", params={"include": "AVAILABILITY", "product": "POD"}).json()["gpus"]
        one = client.get(f"/catalog/gpus/{RTX4090}")
        assert client.get("/catalog/gpus", params={"include": "AVAILABILITY"}).status_code == 400
        assert client.get("/catalog/gpus", params={"cloud": "SECURE"}).status_code == 400
        assert client.get("/catalog/gpus", params={"include": "STOCK", "product": "POD"}).status_code == 422
        assert client.get("/catalog/gpus/NVIDIA GeForce GTX 1080").status_code == 404
    rtx5090 = next(g for g in plain if g["id"] == RTX5090)
    assert rtx5090["price"]["community"] == 0.74 and "availability" not in rtx5090
    assert all(g["availability"] == "HIGH" and g["dataCenters"] for g in stocked)
    assert one.status_code == 200 and one.json()["memory"] == 24


def test_paths_the_emulator_does_not_serve(runpod_emulator):
    with api(runpod_emulator) as client:
        unknown = client.get("/nothing/here")
        wrong_method = client.put("/pods")
        not_emulated = client.patch("/pods/abc", json={"name": "x"})
    assert (unknown.status_code, wrong_method.status_code, not_emulated.status_code) == (404, 405, 501)
    assert wrong_method.headers["allow"] == "GET, POST"
    assert all(r.headers["content-type"] == "application/problem+json" for r in (unknown, wrong_method, not_emulated))


# ---------------------------------------------------------------------------------------------- faults

def test_capacity_errors_per_gpu_and_cloud(runpod_emulator):
    emu = runpod_emulator
    emu.faults.no_capacity(RTX5090, ["COMMUNITY"])
    with api(emu) as client:
        refused_ = client.post("/pods", json=body(cloud="COMMUNITY"))
        secure = client.post("/pods", json=body(cloud="SECURE"))
        other_gpu = client.post("/pods", json=body(gpu={"id": RTX4090}))
    assert refused_.status_code == 400
    assert refused_.json() == {"title": "Bad Request", "status": 400, "detail": CAPACITY_DETAIL}
    assert (secure.status_code, other_gpu.status_code) == (201, 201)
    assert emu.requests[0].fault == "capacity"
    with api(emu) as client:
        for pod in emu.live_pods():
            assert client.delete(f"/pods/{pod.id}").status_code == 204


def test_capacity_texts_vary_and_a_forbidden_pool_is_a_403(runpod_emulator):
    emu = runpod_emulator
    emu.faults.no_capacity(RTX5090, ["COMMUNITY"])
    emu.faults.forbid_pool(RTX4090, ["SECURE"])
    with api(emu) as client:
        texts = [client.post("/pods", json=body()).json()["detail"] for _ in range(len(CAPACITY_DETAILS))]
        forbidden = client.post("/pods", json=body(gpu={"id": RTX4090}, cloud="SECURE"))
        allowed = client.post("/pods", json=body(gpu={"id": RTX4090}, cloud="COMMUNITY"))
        assert texts == list(CAPACITY_DETAILS) and len(set(texts)) > 1
        assert (forbidden.status_code, forbidden.json()["detail"]) == (403, POOL_FORBIDDEN_DETAIL)
        assert allowed.status_code == 201
        assert client.delete(f"/pods/{allowed.json()['id']}").status_code == 204


def test_a_429_on_create_creates_nothing(runpod_emulator):
    emu = runpod_emulator
    emu.faults.rate_limit(count=1, retry_after_s=3, methods=["POST"], paths=["/v2/pods"])
    with api(emu) as client:
        limited = client.post("/pods", json=body())
        assert (limited.status_code, limited.headers["retry-after"]) == (429, "3")
        assert emu.pods == {}
        created = client.post("/pods", json=body())
        assert client.delete(f"/pods/{created.json()['id']}").status_code == 204


def test_a_host_without_a_public_ip_never_publishes_port_22(runpod_emulator):
    emu = runpod_emulator
    emu.faults.no_public_ip = 1
    pod_id = create(emu)["id"]
    emu.wait_ready(pod_id)
    with api(emu) as client:
        shown = client.get(f"/pods/{pod_id}").json()
        assert shown["status"] == "RUNNING" and shown["ssh"]["direct"] is None
        assert [p["ip"] for p in shown["runtime"]["ports"]] == [None, None]
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", shown["runtime"]["ports"][1]["public"]), timeout=2).close()
        other = create(emu)["id"]  # only the next pod
        assert client.get(f"/pods/{other}").json()["status"] in ("PROVISIONING", "STARTING", "RUNNING")
        assert emu.wait_ready(other) and client.get(f"/pods/{other}").json()["ssh"]["direct"] is not None
        for pod in (pod_id, other):
            assert client.delete(f"/pods/{pod}").status_code == 204


def test_a_garbled_201_still_creates_the_pod(runpod_emulator):
    emu = runpod_emulator
    emu.faults.create_garbled = 1
    with api(emu) as client:
        answer = client.post("/pods", json=body(name="lorapod-garbled"))
        assert answer.status_code == 201 and answer.headers["content-type"] == "text/html"
        [pod] = emu.pods_named("lorapod-garbled")
        assert client.post("/pods", json=body(name="next")).json()["name"] == "next"  # only the next create
        for pod in emu.live_pods():
            assert client.delete(f"/pods/{pod.id}").status_code == 204
    assert emu.violations == []  # off the document on purpose, not by mistake


def test_the_pod_list_shows_a_new_pod_only_after_list_lag_s(runpod_emulator):
    emu = runpod_emulator
    emu.faults.list_lag_s = 1.0
    pod_id = create(emu, name="lorapod-lagged")["id"]
    with api(emu) as client:
        assert client.get(f"/pods/{pod_id}").status_code == 200  # by id: at once
        assert pod_id not in [p["id"] for p in client.get("/pods").json()["pods"]]
        wait_until(lambda: pod_id in [p["id"] for p in client.get("/pods").json()["pods"]], "the pod listed")
        assert client.delete(f"/pods/{pod_id}").status_code == 204


def test_rate_limit_answers_429_with_retry_after_for_the_next_requests(runpod_emulator):
    emu = runpod_emulator
    rule = emu.faults.rate_limit(count=2, retry_after_s=7, methods=["GET"], paths=["/v2/pods"])
    with api(emu) as client:
        catalog = client.get("/catalog/gpus")
        answers = [client.get("/pods") for _ in range(3)]
    assert catalog.status_code == 200
    assert [a.status_code for a in answers] == [429, 429, 200] and rule.remaining == 0
    assert answers[0].headers["retry-after"] == "7" and answers[0].json()["status"] == 429
    assert answers[0].headers["ratelimit"] == '"minute";r=0;t=7'


def test_a_rate_limit_for_the_day_window_asks_for_hours(runpod_emulator):
    emu = runpod_emulator
    emu.faults.rate_limit(count=1, retry_after_s=40_000, methods=["DELETE"], window="day")
    with api(emu) as client:
        answer = client.delete("/pods/whatever")
    assert answer.status_code == 429 and answer.headers["retry-after"] == "40000"
    assert "day window" in answer.json()["detail"] and answer.headers["ratelimit-policy"].startswith('"day";')


def test_server_errors_on_reads_leave_writes_alone(runpod_emulator):
    emu = runpod_emulator
    emu.faults.read_errors(count=2, status=502)
    with api(emu) as client:
        created = client.post("/pods", json=body())
        reads = [client.get(f"/pods/{created.json()['id']}").status_code for _ in range(3)]
        emu.faults.server_errors(count=1, status=503, methods=["DELETE"])
        deletes = [client.delete(f"/pods/{created.json()['id']}").status_code for _ in range(2)]
    assert (created.status_code, reads, deletes) == (201, [502, 502, 200], [503, 204])
    assert [r.fault for r in emu.requests] == [None, "rule 502", "rule 502", None, "rule 503", None]


def test_a_create_that_answers_500_after_creating_the_pod(runpod_emulator):
    emu = runpod_emulator
    emu.faults.list_lag_s = 0  # about the list's contents, not its lag (tested on its own)
    emu.faults.create_500_after_create = 1
    with api(emu) as client:
        answer = client.post("/pods", json=body(name="lorapod-run42"))
        assert answer.status_code == 500
        listed = [p for p in client.get("/pods").json()["pods"] if p["name"] == "lorapod-run42"]
        assert len(listed) == 1 and listed[0]["cost"] > 0  # it exists, and it bills
        assert client.post("/pods", json=body(name="next")).status_code == 201  # only the next create
        for pod in emu.live_pods():
            assert client.delete(f"/pods/{pod.id}").status_code == 204


def test_a_create_slower_than_the_clients_timeout_still_creates(runpod_emulator):
    emu = runpod_emulator
    emu.faults.create_delay_s = 5.0
    with api(emu, timeout=0.5) as client, pytest.raises(httpx.ReadTimeout):
        client.post("/pods", json=body(name="lorapod-slow"))
    emu.faults.create_delay_s = 0
    [pod] = wait_until(lambda: emu.pods_named("lorapod-slow"), "the pod created by the timed-out request")
    with api(emu) as client:
        assert client.delete(f"/pods/{pod.id}").status_code == 204


def test_a_pod_terminated_from_the_console_is_gone_for_the_client(runpod_emulator):
    emu = runpod_emulator
    pod_id = create(emu)["id"]
    emu.wait_ready(pod_id)
    emu.terminate(pod_id)
    assert emu.pod(pod_id).machine.processes() == [] and emu.live_pods() == []
    with api(emu) as client:
        assert client.get(f"/pods/{pod_id}").status_code == 404
        assert client.delete(f"/pods/{pod_id}").status_code == 404


def test_insufficient_balance_is_402(runpod_emulator):
    runpod_emulator.faults.insufficient_balance = True
    with api(runpod_emulator) as client:
        answer = client.post("/pods", json=body())
    assert answer.status_code == 402 and answer.json()["status"] == 402 and not runpod_emulator.pods


def test_a_pod_that_never_becomes_ready_says_why_in_its_log(runpod_emulator):
    emu = runpod_emulator
    emu.faults.never_ready = True
    pod_id = create(emu)["id"]
    pod = emu.pod(pod_id)
    with api(emu) as client:
        wait_until(lambda: client.get(f"/pods/{pod_id}").json()["status"] == "RUNNING", "RUNNING")
        seen = client.get(f"/pods/{pod_id}").json()
        # No public port, so no scanner: the stream goes quiet after the backlog, and stays open.
        events, _ = log_events(client, pod_id, until=lambda p: "unsatisfied condition: cuda>=12.8" in p["line"])
        assert seen["runtime"] is None and seen["ssh"]["direct"] is None and seen["cost"] > 0
        assert events
        assert pod.machine is None and not pod.ready  # no container: nothing that could ever listen
        assert client.delete(f"/pods/{pod_id}").status_code == 204


@needs_root
def test_sshd_refuses_connections_for_a_while_after_ready(runpod_emulator, client_key):
    emu = runpod_emulator
    pkey, public = client_key
    emu.faults.refuse_ssh_for_s = WAIT_S * 10  # the test ends the refusal itself: no race with the clock
    pod_id = create(emu, public)["id"]
    pod = emu.wait_ready(pod_id)
    assert refused(pod.proxy.port)
    pod.proxy.refuse(until=0)
    run(wait_until(lambda: _try_ssh(emu, pod_id, pkey), "SSH accepted after the refusal"), "true")
    with api(emu) as client:
        assert client.delete(f"/pods/{pod_id}").status_code == 204


def _try_ssh(emu, pod_id, pkey):
    try:
        return ssh(emu, pod_id, pkey)
    except (paramiko.SSHException, OSError):
        return None


@needs_root
def test_cut_connections_now_and_when_a_condition_holds(runpod_emulator, client_key):
    emu = runpod_emulator
    pkey, public = client_key
    pod_id = create(emu, public)["id"]
    pod = emu.wait_ready(pod_id)
    client = ssh(emu, pod_id, pkey)
    assert pod.proxy.live_connections == 1
    assert emu.cut_connections(pod_id) == 1
    with pytest.raises((paramiko.SSHException, OSError, EOFError)):
        run(client, "true")

    flag = pod.folder / "step-22"  # pods share this machine's filesystem
    trigger = emu.cut_connections_when(pod_id, lambda: "22" in flag.read_text())  # OSError: not yet
    client = ssh(emu, pod_id, pkey)  # reconnecting works
    assert run(client, "echo connected").strip() == "connected"
    # Written from here, not over the session: a cut racing the command's own exit status proves nothing.
    flag.write_text("22\n")
    assert trigger.fired.wait(WAIT_S) and trigger.cut == 1
    with pytest.raises((paramiko.SSHException, OSError, EOFError)):
        run(client, "true")

    client = ssh(emu, pod_id, pkey)
    assert emu.cut_connections(pod_id, mode="hang") == 1
    with pytest.raises(paramiko.SSHException, match="Timeout opening channel"):
        client.get_transport().open_session(timeout=1)  # nothing arrives over a silently dead connection
    client.close()
    with api(emu) as client_api:
        assert client_api.delete(f"/pods/{pod_id}").status_code == 204


@needs_root
def test_start_sh_starts_the_watchdog_from_boot_and_it_deletes_its_pod_with_the_pod_key(runpod_emulator, tmp_path):
    emu = runpod_emulator  # the default pod key: REST refused, GraphQL allowed
    env = {"LORAPOD_MAX_RUNTIME_S": "60", "LORAPOD_STARTED_AT": "1000", "LORAPOD_API_URL": emu.url,
           "LORAPOD_WATCHDOG_POLL_S": "0.1"}  # what lorapod sends in the create
    pod_id = create(emu, env=env, image=LORAPOD_IMAGE)["id"]
    pod = emu.pod(pod_id)
    assert pod.terminated.wait(WAIT_S), pod.log.text()
    [done] = wait_until(lambda: [r for r in emu.requests if r.template == "/graphql" and r.status == 200
                                 and "podTerminate" in r.body["query"] and not r.response.get("errors")],
                        "the GraphQL podTerminate recorded")
    assert (done.key, done.key_pod) == ("pod", pod_id)
    refused = [r for r in emu.requests if r.key == "pod" and r.template != "/graphql"]
    assert refused and all(r.status == 403 for r in refused), "REST was tried first and refused"
    assert "deadline passed" in pod.log.text() and pod.key not in pod.log.text()
    wait_until(lambda: pod.machine.processes() == [], "the pod's processes gone")
    assert emu.live_pods() == []


@needs_root
def test_stop_kills_every_pod(client_key):
    emu = RunPodEmulator(api_key="rpa_OTHER").start()
    try:
        pods = [emu.wait_ready(create(emu, client_key[1], image=image)["id"])
                for image in (RUNPOD_IMAGE, LORAPOD_IMAGE)]
        processes = [pid for p in pods for pid in p.machine.processes()]
    finally:
        emu.stop()
        emu.stop()  # idempotent
    assert not any(alive(pid) for pid in processes)
    assert len(emu.live_pods()) == 2  # what the client left is still reported after the stop
    assert not emu.root.exists()
    emu.assert_clean()


def test_the_committed_openapi_document_is_runpods_reference_copy():
    from tests.emulator.openapi import SPEC_NAME, shared_copy, spec_path

    reference = shared_copy()
    if reference is None:
        pytest.skip("no shared/reference/ on this machine to compare with")
    assert spec_path().name == SPEC_NAME
    assert spec_path().read_bytes() == reference.read_bytes(), "tests/emulator's copy drifted from shared/reference"
