"""Reading tensor files safely: safetensors, or PyTorch files with `weights_only` (no arbitrary unpickling)."""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from vist_rt.errors import VistError, first_line


def read_tensor_file(path: Path, what: str, error: type[VistError] = VistError) -> Mapping[str, object]:
    """The mapping stored in `path` (a .safetensors file, or a torch file read with weights_only).

    `what` names the file in messages (e.g. "authors' checkpoint"); problems raise `error` with one line.
    """
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise error(f"{path} is not a readable safetensors file: {exc}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found is None:
            raise error(f"{path} is not a readable PyTorch file (not a tensor file)") from None
        raise error(
            f"{path} holds objects other than tensors ({found.group(1)}), which are not unpickled for safety; "
            "where you trust the file, re-save its tensors: torch.save(ckpt['state_dict'], 'weights.pth')"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        msg = first_line(exc) or type(exc).__name__
        raise error(f"{path} is not a readable PyTorch file: {msg}") from None
    except Exception:  # the unpickler raises KeyError, IndexError, ... on text or other junk
        raise error(f"{path} is not a readable PyTorch file (not a tensor file)") from None
    if not isinstance(obj, Mapping):
        raise error(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    return obj


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """Hex SHA-256 of named tensors (names, shapes, float32 bytes) in name order: an identity of weights."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(tensors):
        v = tensors[name].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{list(v.shape)};".encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()
