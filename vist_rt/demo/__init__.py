"""The shipped demo model: Vi-ST trained with the cpu-small preset on the project's simulated retina.

Rebuilt from nothing by `tools/make_demo_model.sh` (simulate, train, evaluate); its provenance (simulator
settings and seed, extractor, the training command) is in the checkpoint's `meta.provenance`. Its features are
raw grey pixel patches, not DINOv2: it runs anywhere without downloads, and says so wherever it is shown.
"""

from __future__ import annotations

from pathlib import Path

from vist_rt.errors import VistError

DEMO_CHECKPOINT = Path(__file__).with_name("demo.safetensors")


def demo_checkpoint() -> Path:
    """Path of the shipped demo checkpoint; VistError when the installation lacks it."""
    if not DEMO_CHECKPOINT.is_file():
        raise VistError(
            f"the demo model is missing from this installation ({DEMO_CHECKPOINT}); reinstall vist-rt or "
            "rebuild it with tools/make_demo_model.sh, or give --checkpoint"
        )
    return DEMO_CHECKPOINT


def is_demo(path: str | Path | None) -> bool:
    """True when `path` is the shipped demo checkpoint."""
    return path is not None and Path(path).resolve() == DEMO_CHECKPOINT.resolve()
