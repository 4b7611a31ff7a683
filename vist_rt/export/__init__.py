"""Exported graphs: ONNX files with vist-rt metadata, and ONNX Runtime sessions over them."""

from vist_rt.export.onnx import OnnxFileError, export_module, file_sha256, read_meta
from vist_rt.export.ort import make_session

__all__ = ["OnnxFileError", "export_module", "file_sha256", "make_session", "read_meta"]
