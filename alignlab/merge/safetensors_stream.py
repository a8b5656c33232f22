"""Reading and writing Hugging Face safetensors checkpoints one tensor at a time.

Why it exists: merging two multi-GB checkpoints (:func:`alignlab.merge.average.merge_checkpoints`) must not hold
a model, nor even a state dict, in memory. :class:`CheckpointReader` opens a checkpoint directory (single file or
sharded with an index) and hands out one tensor at a time (``safe_open``); :class:`StreamingSafetensorsWriter`
writes the header of an output file from the planned dtype and shape of every tensor, then appends each tensor's
bytes as it is produced. The safetensors library itself only writes whole dicts of tensors.
"""
from __future__ import annotations

import json
import math
import struct
from contextlib import ExitStack
from pathlib import Path

import torch

from alignlab.errors import ModelLoadError
from alignlab.merge.checks import MergeMismatchError

__all__ = ["INDEX_NAME", "SINGLE_NAME", "ST_DTYPES", "CheckpointReader", "StreamingSafetensorsWriter", "itemsize"]

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL"}
for _name, _code in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"), ("uint16", "U16"),
                     ("uint32", "U32"), ("uint64", "U64")):
    if hasattr(torch, _name):
        ST_DTYPES[getattr(torch, _name)] = _code
del _name, _code


def itemsize(code: str) -> int:
    """Bytes per element of a safetensors dtype code ("F32" -> 4)."""
    for dtype, c in ST_DTYPES.items():
        if c == code:
            return torch.empty((), dtype=dtype).element_size()
    raise MergeMismatchError(f"unsupported safetensors dtype {code!r}")


class CheckpointReader:
    """Read side of a safetensors checkpoint directory (single file or sharded with an index). The files stay
    open (in ``stack``) until the caller's ExitStack closes."""

    def __init__(self, directory: Path, stack: ExitStack, role: str):
        from safetensors import safe_open

        self.directory, self.role = directory, role
        index = directory / INDEX_NAME
        if index.is_file():
            self.index = json.loads(index.read_text())
            files = list(dict.fromkeys(self.index["weight_map"].values()))
        elif (directory / SINGLE_NAME).is_file():
            self.index, files = None, [SINGLE_NAME]
        else:
            raise ModelLoadError(f"{role} checkpoint {str(directory)!r} has neither {SINGLE_NAME} nor {INDEX_NAME}: "
                                 f"merging streams safetensors files (re-save the model with save_pretrained)")
        self.files = files
        self.handles = {f: stack.enter_context(safe_open(str(directory / f), framework="pt", device="cpu"))
                        for f in files}
        self.file_of: dict[str, str] = {}
        self.info: dict[str, tuple[str, tuple[int, ...]]] = {}  # key -> (dtype code, shape)
        for f, h in self.handles.items():
            for key in h.keys():
                sl = h.get_slice(key)
                self.file_of[key] = f
                self.info[key] = (sl.get_dtype(), tuple(sl.get_shape()))

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v[1] for k, v in self.info.items()}

    def metadata(self, f: str) -> dict:
        return dict(self.handles[f].metadata() or {})

    def tensor(self, key: str) -> torch.Tensor:
        return self.handles[self.file_of[key]].get_tensor(key)


class StreamingSafetensorsWriter:
    """Writes one safetensors file tensor by tensor: the header is computed from the planned (key, dtype code,
    shape, itemsize) of every tensor, then each tensor's bytes are appended as it is produced (nothing else is held
    in memory). :meth:`write` must be called in the planned order; :meth:`close` checks that every tensor came."""

    def __init__(self, path: Path, plan: list[tuple[str, str, tuple[int, ...], int]], metadata: dict):
        header, offset = {}, 0
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        for key, code, shape, size in plan:
            nbytes = size * math.prod(shape)
            header[key] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        self.expected = [(k, header[k]["data_offsets"][1] - header[k]["data_offsets"][0], c) for k, c, _, _ in plan]
        self.position, self.total = 0, offset
        self.path = path
        self.file = open(path, "wb")
        self.file.write(struct.pack("<Q", len(raw)))
        self.file.write(raw)

    def write(self, key: str, tensor: torch.Tensor) -> None:
        want_key, nbytes, code = self.expected[self.position]
        if key != want_key or ST_DTYPES.get(tensor.dtype) != code or tensor.numel() * tensor.element_size() != nbytes:
            raise RuntimeError(f"internal error writing {self.path}: got {key!r} ({tensor.dtype}), expected "
                               f"{want_key!r} ({code}, {nbytes} bytes)")
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        self.file.write(data.numpy().data)
        self.position += 1

    def close(self) -> None:
        self.file.close()
        if self.position != len(self.expected):
            raise RuntimeError(f"internal error: {self.path} got {self.position} of {len(self.expected)} tensors")
