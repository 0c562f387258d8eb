"""Read a .safetensors file into numpy arrays without torch.

safetensors' own numpy loader refuses bfloat16, which is what a GPU-trained adapter is often saved in; the
format is simple (an 8-byte little-endian header length, a JSON header, then raw little-endian data), so it
is read here directly and bfloat16 widened to float32 (its bits are the top half of a float32's).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}
MAX_HEADER = 100 << 20  # a header is JSON metadata; more than this is a broken or hostile file


def read(path: Path) -> dict[str, np.ndarray]:
    """Every tensor in `path`, bfloat16 as float32; ValueError names the file when it cannot be read."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(MAX_HEADER, len(data) - 8):
        raise ValueError(f"{path}: header length {n} does not fit the file; not a safetensors file")
    header = json.loads(data[8:8 + n])
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = body[start:end]
        if info["dtype"] == "BF16":
            array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in DTYPES:
            array = np.frombuffer(raw, dtype=np.dtype(DTYPES[info["dtype"]]).newbyteorder("<"))
        else:
            raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}, which the exporter does not read")
        out[name] = array.reshape(info["shape"])
    return out
