"""What preflight asks the pod's interpreter (`python run.py gpu=rtx5090 pipeline=preflight`), one JSON line each:

    {"check": "cuda", "status": "ok" | "fail" | "no GPU", "detail": "..."}

Run with the interpreter training will use. Standard library only at the top: each library is imported in a
child process of its own, so one that crashes the interpreter (a CUDA library loaded on the wrong driver
segfaults) or hangs costs one line, not the whole report. "no GPU" is what a machine without a CUDA device
gets on the GPU lines; whether that fails the preflight is the client's call (preflight.require_gpu).
"""
from __future__ import annotations

import json
import subprocess
import sys

IMPORT_TIMEOUT_S = 300  # unsloth's first import compiles and patches for a while on a cold pod
LIBRARIES = ("bitsandbytes", "triton", "xformers", "unsloth")

# Prints the CUDA device as torch sees it, and whether this torch build carries kernels for it: a card newer
# than the build (sm_120 on a torch without it) is "available" and then fails at the first kernel.
CUDA_PROBE = r"""
import json, torch
if not torch.cuda.is_available():
    print(json.dumps({"available": False, "torch": torch.__version__, "cuda": torch.version.cuda}))
else:
    major, minor = torch.cuda.get_device_capability(0)
    print(json.dumps({"available": True, "torch": torch.__version__, "cuda": torch.version.cuda,
                      "name": torch.cuda.get_device_name(0), "sm": f"sm_{major}{minor}",
                      "arch_list": torch.cuda.get_arch_list(), "count": torch.cuda.device_count()}))
"""


def emit(check: str, status: str, detail: str) -> None:
    print(json.dumps({"check": check, "status": status, "detail": detail}), flush=True)


def run_child(code: str) -> tuple[int, str]:
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return -1, f"no answer within {IMPORT_TIMEOUT_S}s"
    return proc.returncode, (proc.stdout if proc.returncode == 0 else proc.stderr or proc.stdout)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "(no output)"


def check_cuda() -> None:
    code, out = run_child(CUDA_PROBE)
    if code != 0:
        emit("torch", "fail", f"import torch failed: {last_line(out)}")
        emit("cuda", "fail", "torch does not import")
        emit("gpu", "fail", "torch does not import")
        return
    info = json.loads(out.strip().splitlines()[-1])
    emit("torch", "ok", f"torch {info['torch']} built for CUDA {info['cuda'] or 'none (a CPU build)'}")
    if not info["available"]:
        emit("cuda", "no GPU", "torch.cuda.is_available() is False")
        emit("gpu", "no GPU", "no CUDA device is visible")
        return
    emit("cuda", "ok", f"torch.cuda.is_available(): {info['count']} device(s)")
    # A build may carry only PTX for an older arch; compute_120 PTX would still JIT, so either form counts.
    arch = info["sm"]
    has_kernels = arch in info["arch_list"] or arch.replace("sm_", "compute_") in info["arch_list"]
    status = "ok" if has_kernels else "fail"
    emit("gpu", status, f"{info['name']}, {arch}; this torch has kernels for "
                        f"{', '.join(info['arch_list']) or 'nothing'}" + ("" if has_kernels else f": none for {arch}"))


def check_library(name: str) -> None:
    code, out = run_child(f"import {name}; print(getattr({name}, '__version__', '?'))")
    if code == 0:
        emit(name, "ok", f"{name} {last_line(out)} imports")
    else:
        emit(name, "fail", f"import {name} failed: {last_line(out)}")


def main() -> int:
    emit("interpreter", "ok", f"Python {sys.version.split()[0]} at {sys.executable}")
    check_cuda()
    for name in LIBRARIES:
        check_library(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
