"""A RunPod REST v2 emulator for tests: a real HTTP server on 127.0.0.1 whose pods are real OpenSSH sshds.

Built from RunPod's OpenAPI document (shared/reference/runpod-openapi-v2.json, "Runpod REST API" 2.0.0) and
the facts in shared/reference/runpod.md. Nothing leaves loopback.

    from tests.emulator import RunPodEmulator

    emu = RunPodEmulator(api_key="rpa_TESTKEY", provisioning_s=0.1, starting_s=0.1, ports_after_running_s=0.3)
    emu.start()                     # emu.url == "http://127.0.0.1:<port>/v2"
    ...                             # point the client at emu.url with Authorization: Bearer rpa_TESTKEY
    emu.live_pods()                 # pods not TERMINATED: what would still bill
    emu.stop()                      # kills every pod's processes; idempotent

or, in pytest, the `runpod_emulator` fixture (tests/emulator/fixtures.py; tests/emulator/conftest.py imports
it for the emulator's own tests): a started emulator, stopped at teardown, which then fails the test if a
response broke the OpenAPI document or the emulator itself failed.

## Endpoints

    POST   /v2/pods                 201 Pod. The body is validated against CreatePodRequest (422 + `errors`, e.g.
                                    an unknown field); then exactly one of gpu/cpu (400; CPU pods: 501), a known
                                    gpu.id (400 naming the catalog), CUDA and mount rules (400; a network volume
                                    on COMMUNITY too: SECURE only), gpu.count within maxCount (400), balance
                                    (402), a pool the account cannot use (403), a GPU type the catalog does not
                                    offer on that cloud (400, not the capacity text), capacity (400, texts below).
    GET    /v2/pods                 {"pods": [...]}, TERMINATED pods left out (and pods created less than
                                    faults.list_lag_s ago). With emu.page_size = n, lists come n a page with
                                    `pagination.nextCursor` while more remain, sent back as `cursor` (a cursor
                                    it never gave: 400); the catalog list pages the same way.
    GET    /v2/pods/{id}            Pod; 404 problem+json once it is terminated.
    DELETE /v2/pods/{id}            204; the public SSH port closes at once, then every process of the pod dies.
    POST   /v2/pods/{id}/action     {"action": start|stop|restart|terminate}: 200 Pod (terminate: 204), 409 when
                                    the pod's `actions` do not list it, 422 for a malformed body.
    GET    /v2/pods/{id}/logs       Server-Sent Events, one per log line: `id: <ts>/<seq>` and
                                    `data: {"ts", "source", "line"}`; `tail` (default 100), `since`, `source`
                                    and the Last-Event-ID header select lines. A live tail: after the backlog
                                    the response (chunked, `Connection: keep-alive`) stays open and sends each
                                    new line as it is logged, until the client hangs up or the emulator stops
                                    (not when the pod goes). Read it as a stream; `.text` never returns.
    GET    /v2/catalog/gpus[/{id}]  GpuType(s) with prices; include=AVAILABILITY&product=POD adds stock, data
                                    centers and CUDA versions (each needs the other: 400).
Other paths of the document answer 501 problem+json; unknown paths 404, wrong methods 405.

Auth: `Authorization: Bearer <key>`. None or an unknown key: 401 problem+json. The account key (api_key) may do
everything. Each pod has a pod-scoped key (`pod.key`, RUNPOD_API_KEY inside the pod) that may only GET or
DELETE that pod (403 otherwise; it stays valid after the pod is gone, answering 404). add_key(key, methods)
adds a key limited to some methods (403 for the others), e.g. a read-only key.

## A pod's life

PROVISIONING (provisioning_s) -> STARTING (starting_s) -> RUNNING. For ports_after_running_s after RUNNING,
and until its sshd listens, `runtime` and `ssh.direct` are null (the recorded behaviour: RUNNING alone is not
ready). Then `runtime.ports` lists a **udp** mapping of private 22 first and the tcp one second (only when the
create asked for "22/tcp"), and `ssh.direct` = {host 127.0.0.1, port <tcp public port>, username <this OS
user>, command}. `ssh.proxy` is null (RunPod's SSH proxy is not emulated). `cost` is the catalog price x
gpu.count while PROVISIONING/STARTING/RUNNING, 0 when EXITED/TERMINATED; `actions` follow the status as the
document lists them. stop closes the public port (start gives a new one, as community pods get); restart
keeps it. While its port 22 is public, the pod's sshd logs a scanner's connection about every
scanner_interval_s (default 1.0; None: never), as a pod on the internet does all day: its log stream is never
quiet for long. A pod with no public port (never_ready) is quiet after its backlog, and its stream stays open.

Each pod is a real OpenSSH sshd on 127.0.0.1, started at STARTING under podinit.py, a child subreaper that
plays the container's PID 1 so that whatever the pod starts (SSH sessions, detached jobs) stays in its tree:

    client --> 127.0.0.1:<tcp public port>  TcpProxy (pod.proxy.port == ssh.direct.port)
           --> 127.0.0.1:<pod.machine.sshd_port>  sshd -D -e, own ed25519 host key, key login only,
               authorized_keys = env.PUBLIC_KEY and env.SSH_PUBLIC_KEY (none: sshd runs, nobody logs in)

Files live in pod.folder (under a private folder in $HOME: sshd's StrictModes refuses /tmp). The container
environment (the create's `env`, plus RUNPOD_POD_ID, RUNPOD_API_KEY = the pod-scoped key, RUNPOD_PUBLIC_IP,
RUNPOD_TCP_PORT_22, RUNPOD_GPU_COUNT, RUNPOD_DC_ID, CUDA_VERSION, LORAPOD_API_URL = emu.url and
LORAPOD_WATCHDOG_DIR = a folder of this pod's own, HOME = pod.folder/home and LORAPOD_WATCHDOG_POLL_S =
watchdog_poll_s unless the create set them) reaches SSH sessions through sshd's SetEnv. Sessions log in as this
OS user and start in its home directory, but HOME is the pod's own, so their shells never run this machine's
~/.bashrc nor write its dotfiles. SetEnv cannot carry a value with a line break
inside (e.g. two keys in PUBLIC_KEY): such a variable is left out of sessions and the log says so. RunPod's
own variables win over the create's `env`; so do LORAPOD_API_URL and LORAPOD_WATCHDOG_DIR (pods share this
machine: the API is the emulator, and a watchdog must never see another pod's lock).

DELETE, terminate and stop kill every descendant of podinit (sshd, sessions, detached processes), then
podinit; emu.stop() does the same for every pod. pod.machine.processes() lists the live pids.

The container log (GET .../logs) has "system" lines (image pull, create/start/stop container) and
"container" lines: the pod's output (sshd's log, the boot watchdog's) and, before sshd starts, one line per
host key in start.sh's format, `lorapod-host-key: ssh-ed25519 SHA256:<base64 sha256 of the key blob, no
padding>` (paramiko's key.fingerprint; ssh-keygen -lf). With boot_watchdog=True (emulator-wide, read at each
create), a pod whose env has LORAPOD_MAX_RUNTIME_S or LORAPOD_HEARTBEAT_FILE also runs remote_image/watchdog.py
from boot, which deletes the pod through this API with its pod-scoped key.

## Fault injection (emu.faults; read when needed, so a test may change it at any time)

    emu.faults.no_capacity("NVIDIA GeForce RTX 5090", ["COMMUNITY"])   # or faults.capacity.add((gpu, cloud))
        creates (and `start` actions) answer 400 with a capacity text: `detail=` if given, else each of
        CAPACITY_DETAILS in turn (texts vary; none is machine-readable), starting with CAPACITY_DETAIL:
        "There are no longer any instances available with the requested specifications. Please refresh and try again."
    emu.faults.forbid_pool("NVIDIA GeForce RTX 5090", ["SECURE"])   # creates there answer 403 (the account's pools)
    emu.faults.rate_limit(count=1, methods=["POST"], paths=["/v2/pods"])  # a 429 on create: nothing is created
    emu.faults.rate_limit(count=2, retry_after_s=1, methods=None, paths=None, window="minute")
        429 + Retry-After, for the minute, hour or day window (RateLimit headers and detail name it); a day
        window's Retry-After can be hours
    emu.faults.read_errors(count=3, status=503, paths=None)                     # 5xx on the next GETs
    emu.faults.server_errors(count=1, status=502, methods=["DELETE"])           # 5xx on anything
        `paths` are the document's templates, e.g. ["/v2/pods/{id}"]; each returns its FaultRule (.remaining)
    emu.faults.create_500_after_create = 1      # the next create makes the pod, then answers 500
    emu.faults.create_delay_s = 5.0             # creates make the pod, then answer 201 this much later
    emu.faults.insufficient_balance = True      # creates answer 402
    emu.faults.never_ready = True               # new pods stay RUNNING, runtime null; the log says why (CUDA)
    emu.faults.refuse_ssh_for_s = 3.0           # new pods refuse SSH connections this long after ready
    emu.faults.no_public_ip = 1                 # the next pod's host has no public IP: port 22's mapping has
                                                # ip null, ssh.direct stays null, nothing answers, forever
    emu.faults.list_lag_s = 3.0                 # GET /v2/pods shows a new pod only this long after its create
    emu.faults.create_garbled = 1               # the next create makes the pod, then answers 201 with HTML
    emu.cut_connections(pod_id, mode="reset")   # drop every live SSH connection now ("hang": silent loss)
    emu.cut_connections_when(pod_id, condition, mode="reset")   # once condition() is true; -> CutTrigger
    emu.terminate(pod_id)                       # terminated from RunPod's console, behind the client's back
A refused key is just a wrong key (401). A DELETE that keeps failing: server_errors(count=99, methods=["DELETE"]).

## Inspecting

    emu.pods                {id: EmulatedPod}; pod.request is the create body as sent (pod.env, pod.gpu,
                            pod.cloud, pod.image, pod.name), pod.status, pod.ready, pod.public_ip, pod.key,
                            pod.log (.text(), .lines), pod.billed_s(), pod.proxy, pod.machine, pod.folder
    emu.live_pods()         pods not TERMINATED; emu.pods_named(name)
    emu.requests            [RequestRecord(method, path, template, key, key_pod, status, body, response, fault)]
                            key: "account" | "pod" | "extra" | "invalid" | "none" (the key itself is never kept)
    emu.wait_ready(pod_id)  blocks until the pod publishes its SSH port
    emu.violations          responses that broke the OpenAPI document (validate=True, the default)
    emu.errors              the emulator's own failures; emu.assert_clean() asserts both are empty

Every response the emulator sends is checked against the document (openapi.py): its status must be documented
(or fall to `default`), its content type listed, its JSON body valid against the schema (Draft 2020-12, $refs
resolved, date-time checked), a 429 must carry an integer Retry-After, and each log event's data must match
the shape the document describes. Pod ids are random; nothing here measures time.

## Where the document is silent or odd, and what the emulator does

- CreatePodRequest closes itself with `unevaluatedProperties: false` over an `allOf`. Draft 2020-12 drops the
  annotations of a failing branch, so a body missing `image` is also told that `name`, `gpu`... "were
  unexpected". The 422's `errors` name only properties the schema does not declare (openapi.request_errors).
- Logs: the document types the stream as a plain string and gives the event shape in prose; it says event ids
  are the `ts` and types Last-Event-ID as a date-time. The emulator's ids are `<ts>/<seq>` (lines with the same
  timestamp stay apart) and Last-Event-ID accepts either form.
- A created pod's example shows `runtime: {}`; the schema, its description and the recorded API say null
  until the pod runs: null it is.
- Pagination: the document has none yet (one page, the default). RunPod's MCP server (runpod/runpod-mcp,
  src/pagination.ts) shapes its lists as `cursor` in, `pagination.nextCursor` out, "to match the cursor-based
  pagination the REST API will add": page_size turns that on. The last page carries no cursor.
- Logs: the document and runpod.md say the stream is held open; neither says what happens when the pod goes,
  so it stays open (the harsher reading). Scanner lines: runpod.md ("a pod with a public port 22 logs
  scanner connections all day"), in OpenSSH's formats as quoted from real servers (crowdsecurity/hub#1168,
  fail2ban/fail2ban#1392), from RFC 5737 documentation addresses.
- `format: float` is not a JSON Schema format (ignored); a 405 has a component but no operation uses it.
- Unknown gpu.id: the document does not say which status; 400 naming the catalog. CPU pods and PATCH: 501.
- Capacity: the document says only that it is a 400 with a human-readable `detail`; the emulator varies
  the text (CAPACITY_DETAILS). A GPU type the catalog does not offer on a cloud, and a network volume on
  COMMUNITY (runpod.md: SECURE only), are 400s with other texts: the document does not give them.
- How long a new pod stays out of GET /v2/pods is not documented: faults.list_lag_s, 2 s unless a test sets it
  (the harsher reading: a client that lists right after a create does not find its pod).
- A host without a public IP: PodRuntimePort.ip is nullable; such a pod keeps its port numbers with ip null
  and ssh.direct null (the harsher reading: a client that trusts the port number alone reaches nothing).
"""
from tests.emulator.pod import EmulatedPod, TcpProxy
from tests.emulator.server import CAPACITY_DETAIL, CAPACITY_DETAILS, POOL_FORBIDDEN_DETAIL, CutTrigger, FaultRule, \
    Faults, GpuOffer, RequestRecord, RunPodEmulator

__all__ = ["CAPACITY_DETAIL", "CAPACITY_DETAILS", "POOL_FORBIDDEN_DETAIL", "CutTrigger", "EmulatedPod", "FaultRule",
           "Faults", "GpuOffer", "RequestRecord", "RunPodEmulator", "TcpProxy"]
