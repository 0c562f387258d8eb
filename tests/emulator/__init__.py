"""A RunPod REST v2 emulator for tests: a real HTTP server on 127.0.0.1 whose pods are real OpenSSH sshds.

Built from RunPod's OpenAPI document (shared/reference/runpod-openapi-v2.json, "Runpod REST API" 2.0.0) and
the facts in shared/reference/runpod.md. Nothing leaves loopback.

    from tests.emulator import RunPodEmulator

    emu = RunPodEmulator(api_key="rpa_TESTKEY", provisioning_s=0.1, starting_s=0.1, ports_after_running_s=0.3,
                         pod_key="graphql", entrypoints={})
    emu.start()                     # emu.url == "http://127.0.0.1:<port>/v2", emu.graphql_url ".../graphql"
    ...                             # point the client at emu.url with Authorization: Bearer rpa_TESTKEY
    emu.live_pods()                 # pods not TERMINATED: what would still bill
    emu.stop()                      # kills every pod's processes; idempotent

or, in pytest, the `runpod_emulator` fixture (tests/emulator/fixtures.py, imported by tests/conftest.py): a
started emulator, stopped at teardown, which then fails the test if a response broke the OpenAPI document or
the emulator itself failed. Pods are PID namespaces (unshare --pid): the emulator needs root, and says so at
start() in unshare's words when it is not.

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
    GET    /v2/billing/pods         listPodBilling: records per pod per bucket (startTime/endTime or lastN, bucketSize,
                                    podId), from the pods' real billed lifetimes and prices; a second shows only
                                    faults.billing_lag_s after it happened (billing lags), or, with
                                    faults.billing_step_s, in whole steps (batches). See billing.py.
    POST   /graphql                 RunPod's legacy GraphQL API (not in the document; see graphql.py): exactly
                                    `pod(input: {podId})` (any selection) -> {"data": {"pod": {id, name,
                                    desiredStatus} | null}} and `podTerminate(input: {podId})` -> {"data":
                                    {"podTerminate": null}}, the pod terminated like DELETE (answer first); podId
                                    inline or through `variables`. Key: ?api_key= (RunPod's docs) or Bearer.
Other paths of the document answer 501 problem+json; unknown paths 404, wrong methods 405.

## Keys (keys.py)

REST: `Authorization: Bearer <key>`; none or an unknown key: 401 problem+json. GraphQL: a missing or unknown key
is 401 with {"errors": [{"message"}]}; a refused or unanswerable request is 200 with `errors` and `data: null`
(GraphQL's convention: the client must read the body). The account key (api_key) may do everything, REST and
GraphQL. Each pod has a pod-scoped key (`pod.key`, RUNPOD_API_KEY in the pod's PID 1) whose powers are NOT
documented: `emu.pod_key` (settable at any time, read at each request) says what it may do, on its own pod only:

    "graphql"  (default) every REST call 403; GraphQL pod and podTerminate. The harsher reading of the one
               report from a real pod (2026-08): REST stop refused (403), runpodctl's GraphQL route worked.
    "rest"     REST GET and DELETE; GraphQL refused.
    "action"   REST GET and POST .../action {"action": "terminate"}; DELETE and other actions 403.
    "none"     nothing (REST 403, GraphQL errors).

It stays valid after its pod is gone (REST 404, GraphQL `pod` null). add_key(key, methods=("GET",),
graphql=False) adds a key of the account limited to those REST methods (403 for the others), and to GraphQL
only with graphql=True: a read-only key, or the user's own restricted key for a watchdog.

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

## A pod is a container

At STARTING a pod's container starts (PodMachine): its own PID and mount namespaces, `unshare --pid --fork
--mount-proc --kill-child`, under podinit.py, the shim, which runs outside it. The namespace's first process,
container.sh, binds the pod's own folder pod.machine.run_dir (pod.folder/run, 0755 and root's at the first
boot) over /run, so sshd's /run/sshd and lorapod's /run/lorapod are the pod's own, and binds empty files over
this machine's ~/.bashrc, ~/.profile... (the image's dotfiles: sessions never run this machine's), then execs
the image's entrypoint, which is then PID 1 of the pod, holding the container environment, and only it:

    the create's `env` (PUBLIC_KEY, SSH_PUBLIC_KEY, LORAPOD_*...), then RunPod's variables over it:
    RUNPOD_POD_ID, RUNPOD_API_KEY = the pod-scoped key, RUNPOD_PUBLIC_IP, RUNPOD_TCP_PORT_22, RUNPOD_GPU_COUNT,
    RUNPOD_DC_ID, CUDA_VERSION; PATH and LANG from this machine, HOME as Docker sets it (root's home).

The emulator adds nothing lorapod could lean on (no API URL, no watchdog folder): lorapod sends what it needs
in the create's `env`. SSH sessions start with sshd's fresh environment, none of those variables (runpod.md),
and log in as this OS user (root) with its HOME. `ps` in a pod shows the pod's processes only; /proc/1 is its
PID 1. The rest of the filesystem is this machine's: pod files live in pod.folder (under a private folder in
$HOME: sshd's StrictModes refuses /tmp), and a test may read what a pod wrote.

FAKE: a Docker engine cannot run here, so an image is a known entrypoint (pod.IMAGES), chosen by its
reference (pod.image_kind; `emu.entrypoints[reference] = "lorapod" | "runpod" | "sshd-pid1"` forces one, read
at each create):

    "lorapod"  a reference naming lorapod (docker.io/lorapod/trainer:TAG, docker.io/you/lorapod-trainer@sha256:..):
               remote_image/start.sh itself, given the image installation's LORAPOD_SSH_DIR (pod.folder/ssh),
               LORAPOD_SSH_LISTEN=127.0.0.1, LORAPOD_SSH_PORT, LORAPOD_AUTHORIZED_KEYS, LORAPOD_PYTHON and
               LORAPOD_SSHD. It logs `lorapod-host-key:` lines, starts watchdog.py when the env has
               LORAPOD_MAX_RUNTIME_S or LORAPOD_HEARTBEAT_FILE, and execs sshd: sshd's process title then
               overwrites what /proc/1/environ shows, as on RunPod. Without a public key it refuses to start
               sshd and exits (unless its watchdog runs): the boot fails, in emu.errors.
    "runpod"   a reference in RunPod's own repositories (runpod/pytorch:..., docker.io/runpod/base:..., any tag
               or digest): images/runpod_start.sh, a stand-in for RunPod's official start script (its header
               cites what it copies and leaves out). PID 1 is bash and stays (`sleep infinity`), so
               /proc/1/environ keeps the variables (runpod.md says so of RunPod's official images). With
               PUBLIC_KEY or SSH_PUBLIC_KEY it appends them to authorized_keys, makes host keys and starts sshd;
               without, no sshd at all (the port is published, connections are reset). It logs no host key.
    "sshd-pid1" anything else (docker.io/unsloth/unsloth:..., x/y:z, ghcr.io/runpod/..): nothing here documents
               its entrypoint, so the harsher reading, sshd as PID 1: the same script with --exec-sshd, which
               execs `sshd -D -e` at the end, so /proc/1/environ shows only sshd's process title (as OpenSSH
               does: runpod.md). Its key is the first of SSH_KEY, PUBLIC_KEY, SSH_PUBLIC_KEY that is set, and
               only it (runpod.md: "Unsloth's image reads SSH_KEY, then PUBLIC_KEY", read as a fallback); sshd
               starts with or without one. None of RunPod's lines, no host key named; sshd's death is PID 1's
               (podinit logs "podinit: runpod_start.sh exited with status N").

    client --> 127.0.0.1:<tcp public port>  TcpProxy (pod.proxy.port == ssh.direct.port)
           --> 127.0.0.1:<pod.machine.sshd_port>  the pod's sshd (-D -e), key login only

The pod is up when its sshd listens: its "Server listening" line, or a socket of the pod's listening on that
port (/proc/net/tcp); a "runpod" pod without a key, once the stand-in says "Pod is ready to use". A boot whose
container or sshd dies ends at once, in sshd's and the image's words (podinit logs "podinit: start.sh exited
with status N"; the stand-in "runpod-emulator: sshd exited with status N"): pod.machine.failed, and emu.errors.

Host keys stay on the pod's disk across stop/start and restart, and so does /run: Docker puts no tmpfs there,
a container's /run is its writable layer, which a restart of the same container keeps (moby/moby#39342: a
restart is a stop and a start; RunPod restarting a container that exited is one too). RunPod's storage page
(docs.runpod.io/pods/storage) says the container disk is "Lost on stop/restart": the sources disagree, and
stale files (a watchdog's lock, pid and status files in /run/lorapod, whose pid may now be another process of
the new namespace) are the harsher case, so the emulator keeps them. lorapod may rely on neither.

DELETE, terminate (REST or GraphQL) and stop kill the container: podinit SIGKILLs unshare and the namespace's
PID 1, and the kernel kills every process in the namespace (sshd, sessions, detached jobs); podinit is a child
subreaper, so it reaps them all. It does the same on SIGTERM, or when the emulator's process dies (polled: never
PR_SET_PDEATHSIG from the emulator's short-lived threads). emu.stop() kills every pod; pod.machine.processes()
lists the live pids (podinit, unshare, the pod's processes) as this machine numbers them.

The container log (GET .../logs) has "system" lines (image pull, create/start/stop container) and
"container" lines: the pod's output, PID 1's and everything it starts (start.sh's or the stand-in's lines,
sshd's log, the watchdog's). lorapod's start.sh logs one line per host key, `lorapod-host-key: ssh-ed25519
SHA256:<base64 sha256 of the key blob, no padding>` (paramiko's key.fingerprint; ssh-keygen -lf).

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
        `paths` are the document's templates, e.g. ["/v2/pods/{id}"]; each returns its FaultRule (.remaining).
        A rule without `paths` is the whole API's, GraphQL included: an outage or an account's 429 does not
        spare /graphql (sources silent: the harsher reading). GraphQL's answer: that status, the rule's
        headers, a JSON `errors` body. Name paths (and methods) to aim a rule at the client's REST calls
        only: a pod's watchdog may use GraphQL (a POST) and would take the rule's count otherwise.
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
                            pod.log (.text(), .lines), pod.billed_s(), pod.proxy, pod.folder,
                            pod.image_kind, pod.container_env() (PID 1's), pod.machine (.processes(),
                            .ssh_dir, .host_key, .authorized_keys, .sshd_port, .failed)
    emu.live_pods()         pods not TERMINATED; emu.pods_named(name)
    emu.requests            [RequestRecord(method, path, template, key, key_pod, status, body, response, fault)]
                            key: "account" | "pod" | "extra" | "invalid" | "none" (the key itself is never kept,
                            nor an ?api_key= in path); GraphQL requests have template "/graphql"
    emu.wait_ready(pod_id)  blocks until the pod publishes its SSH port
    emu.violations          responses that broke the OpenAPI document (validate=True, the default)
    emu.errors              the emulator's own failures; emu.assert_clean() asserts both are empty

Every REST response the emulator sends is checked against the document (openapi.py): its status must be documented
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
- The pod key's powers: undocumented (runpod.md); emu.pod_key, default "graphql", the harsher reading of the one
  report (keys.py). GraphQL on a pod that is gone: `pod` is null; `podTerminate` answers errors (sources silent:
  the harsher reading, not a quiet success). GraphQL's desiredStatus: RUNNING while the pod bills, EXITED once
  stopped.
- Images other than RunPod's and lorapod's: runpod.md documents PID 1 holding the variables for RunPod's official
  images only, so any other image gets sshd as PID 1 ("sshd-pid1": the variables are out of a session's reach).
- RunPod's official images print host key fingerprints (ssh-keygen -lf) and write the container's variables to
  /etc/rp_environment, sourced from ~/.bashrc (runpod/containers container-template/start.sh); the stand-in
  does neither (the harsher reading: no pinning from their log, no variables in sessions).
- A host without a public IP: PodRuntimePort.ip is nullable; such a pod keeps its port numbers with ip null
  and ssh.direct null (the harsher reading: a client that trusts the port number alone reaches nothing).
"""
from tests.emulator.pod import EmulatedPod, TcpProxy
from tests.emulator.server import CAPACITY_DETAIL, CAPACITY_DETAILS, POOL_FORBIDDEN_DETAIL, CutTrigger, FaultRule, \
    Faults, GpuOffer, RequestRecord, RunPodEmulator

__all__ = ["CAPACITY_DETAIL", "CAPACITY_DETAILS", "POOL_FORBIDDEN_DETAIL", "CutTrigger", "EmulatedPod", "FaultRule",
           "Faults", "GpuOffer", "RequestRecord", "RunPodEmulator", "TcpProxy"]
