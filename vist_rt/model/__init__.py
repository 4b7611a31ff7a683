"""The Vi-ST model: offline, streaming, and its checkpoints."""

from vist_rt.model.authors import from_authors_checkpoint, infer_config
from vist_rt.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from vist_rt.model.config import ViSTConfig
from vist_rt.model.streaming import StreamingViST, StreamState
from vist_rt.model.vist import ViST, step_macs

__all__ = [
    "Checkpoint",
    "StreamState",
    "StreamingViST",
    "ViST",
    "ViSTConfig",
    "from_authors_checkpoint",
    "infer_config",
    "load_checkpoint",
    "save_checkpoint",
    "step_macs",
]
