"""The Vi-ST model: offline, streaming, and its checkpoints."""

from vist_rt.model.authors import from_authors_checkpoint, infer_config
from vist_rt.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from vist_rt.model.config import ViSTConfig
from vist_rt.model.device_stream import DeviceStreamingViST
from vist_rt.model.native import NativeStreamingViST
from vist_rt.model.step_graph import OnnxStreamingViST, StepGraph, export_step_onnx
from vist_rt.model.streaming import StreamingViST, StreamState
from vist_rt.model.vist import ViST, step_macs

__all__ = [
    "Checkpoint",
    "DeviceStreamingViST",
    "NativeStreamingViST",
    "OnnxStreamingViST",
    "StepGraph",
    "StreamState",
    "StreamingViST",
    "ViST",
    "ViSTConfig",
    "export_step_onnx",
    "from_authors_checkpoint",
    "infer_config",
    "load_checkpoint",
    "save_checkpoint",
    "step_macs",
]
