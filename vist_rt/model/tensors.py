"""Matching a set of named tensors against a model, with one-line reports of what differs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def _listing(names: Iterable[str], limit: int = 4) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def _shape(t: torch.Tensor | torch.Size) -> str:
    shape = t.shape if isinstance(t, torch.Tensor) else t
    return "[" + ",".join(str(s) for s in shape) + "]"


def mismatch_report(
    tensors: Mapping[str, torch.Tensor], model: nn.Module, prefix: str = "", check_finite: bool = True
) -> str | None:
    """None if `tensors` fit `model.state_dict()` exactly, else one line naming every problem."""
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in tensors and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in tensors if k not in expected]
    if missing:
        problems.append("missing " + _listing(prefix + k for k in missing))
    if unexpected:
        problems.append("unexpected " + _listing(prefix + k for k in unexpected))
    wrong = [
        f"{prefix}{k} is {_shape(tensors[k])}, expected {_shape(v)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if wrong:
        problems.append(
            "wrong shape: " + "; ".join(wrong[:3]) + (f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else "")
        )
    if not problems:
        kinds = [
            f"{prefix}{k} is {tensors[k].dtype}"
            for k, v in expected.items()
            if k in tensors and v.is_floating_point() and not tensors[k].is_floating_point()
        ]
        if kinds:
            problems.append("not floating point: " + "; ".join(kinds[:3]))
    if check_finite and not problems:
        # checked in the dtype the model will hold them in (a float64 1e300 is inf in float32)
        bad = [
            k
            for k, v in tensors.items()
            if v.is_floating_point() and not bool(torch.isfinite(v.to(expected[k].dtype)).all())
        ]
        bad += [k for k, v in tensors.items() if k.endswith("running_var") and bool((v < 0).any())]
        if bad:
            problems.append("NaN/inf (or negative variance) values in " + _listing(prefix + k for k in bad))
    return "; ".join(problems) if problems else None
