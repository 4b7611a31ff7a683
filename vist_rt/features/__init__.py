"""Feature extraction: uint8 frames -> per-frame tokens `[N, grid*grid, D]` (DINOv2 or raw patches)."""

from vist_rt.features.backbones import BACKBONES, get_backbone
from vist_rt.features.extractor import DINOv2Extractor, Extractor, PatchesExtractor, from_spec
from vist_rt.features.preprocess import Preprocessor, PreprocessSpec
from vist_rt.features.weights import Weights, WeightsError, read_weights

__all__ = [
    "BACKBONES",
    "DINOv2Extractor",
    "Extractor",
    "PatchesExtractor",
    "PreprocessSpec",
    "Preprocessor",
    "Weights",
    "WeightsError",
    "from_spec",
    "get_backbone",
    "read_weights",
]
