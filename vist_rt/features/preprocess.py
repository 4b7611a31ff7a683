"""Frames as cameras and files give them -> the ViT's input; one code path for live use and training."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from vist_rt.errors import VistError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROPS = ("center", "letterbox")


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """How frames become the model input: square `image_size`, crop policy, input colour order."""

    image_size: int = 224
    crop: str = "center"  # "center": largest centred square; "letterbox": whole frame, padded with the mean
    color: str = "bgr"  # channel order of 3-channel input frames (OpenCV gives BGR)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise VistError(f"crop must be one of {', '.join(CROPS)}, got {self.crop!r}")
        if self.color not in ("bgr", "rgb"):
            raise VistError(f"color must be 'bgr' or 'rgb', got {self.color!r}")
        if not isinstance(self.image_size, int) or self.image_size < 14:
            raise VistError(f"image size must be an integer >= 14, got {self.image_size!r}")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, for extractor specs."""
        return {**dataclasses.asdict(self), "mean": list(self.mean), "std": list(self.std), "resize": "cv2-area/cubic"}


def as_batch(frames: np.ndarray) -> np.ndarray:
    """uint8 `[H,W]`, `[H,W,1|3]`, `[N,H,W]` or `[N,H,W,1|3]` -> `[N,H,W,C]` view (C = 1 or 3); else VistError.

    A 3-D array whose last dimension is 1 or 3 is one frame (a batch of 1- or 3-pixel-wide frames is not).
    """
    if not isinstance(frames, np.ndarray):
        raise VistError(f"frames must be a numpy uint8 array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise VistError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim >= 3 and frames.shape[-1] == 4:
        raise VistError("frames have 4 channels (BGRA?): convert to BGR or grey first")
    if frames.ndim == 2:
        batch = frames[None, :, :, None]
    elif frames.ndim == 3:
        batch = frames[None] if frames.shape[-1] in (1, 3) else frames[..., None]  # [H,W,C] or [N,H,W]
    elif frames.ndim == 4 and frames.shape[-1] in (1, 3):
        batch = frames
    else:
        raise VistError(f"frames must be [H,W], [H,W,3], [N,H,W] or [N,H,W,3] uint8, got shape {list(frames.shape)}")
    if 0 in batch.shape:
        raise VistError(f"frames must not be empty, got shape {list(frames.shape)}")
    return batch


class Preprocessor:
    """uint8 frames -> float32 `[N, 3, S, S]`, RGB, ImageNet-normalised.

    Resizing uses area averaging when shrinking and bicubic when enlarging. The single-frame path
    writes into buffers made once (no allocation per frame beyond OpenCV's resize scratch).
    """

    def __init__(self, spec: PreprocessSpec | None = None) -> None:
        self.spec = spec or PreprocessSpec()
        s = self.spec.image_size
        mean, std = np.asarray(self.spec.mean, np.float32), np.asarray(self.spec.std, np.float32)
        # normalise as one affine map on uint8 values: x * a + b, per RGB channel
        self._a = (1.0 / (255.0 * std)).reshape(3, 1, 1).astype(np.float32)
        self._b = (-mean / std).reshape(3, 1, 1).astype(np.float32)
        self._pad = tuple(round(255 * m) for m in self.spec.mean)  # RGB
        self._square = np.empty((s, s, 3), np.uint8)
        self._one = np.empty((1, 3, s, s), np.float32)

    def _to_square(self, frame: np.ndarray, out: np.ndarray, color: str) -> None:
        """One `[H,W,C]` frame whose channels are in `color` order -> `out` `[S,S,3]` uint8 RGB."""
        s = self.spec.image_size
        h, w, c = frame.shape
        img = frame[:, :, 0] if c == 1 else frame
        if self.spec.crop == "center":
            side = min(h, w)
            y, x = (h - side) // 2, (w - side) // 2
            img, box, target = img[y : y + side, x : x + side], (s, s), out
        else:
            scale = s / max(h, w)
            box = (max(1, round(w * scale)), max(1, round(h * scale)))
            out[:] = self._pad
            y, x = (s - box[1]) // 2, (s - box[0]) // 2
            target = out[y : y + box[1], x : x + box[0]]
        interp = cv2.INTER_AREA if box[0] <= img.shape[1] else cv2.INTER_CUBIC
        resized = cv2.resize(img, box, interpolation=interp)
        if c == 1:
            target[:] = resized[:, :, None]
        elif color == "bgr":
            target[:] = resized[:, :, ::-1]
        else:
            target[:] = resized

    def __call__(self, frames: np.ndarray, color: str | None = None) -> np.ndarray:
        """uint8 frames (any size) -> float32 `[N, 3, S, S]`. The single-frame result is a reused buffer.

        `color`: the channel order of these frames ("bgr" | "rgb"), when it is not the spec's (e.g. a rig's RGB
        frames for a model trained on OpenCV's BGR frames); grey frames ignore it."""
        if color is None:
            color = self.spec.color
        elif color not in ("bgr", "rgb"):
            raise VistError(f"color must be 'bgr' or 'rgb', got {color!r}")
        batch = as_batch(frames)
        n = batch.shape[0]
        out = self._one if n == 1 else np.empty((n, 3, self.spec.image_size, self.spec.image_size), np.float32)
        for i in range(n):
            self._to_square(batch[i], self._square, color)
            chw = self._square.transpose(2, 0, 1)
            np.multiply(chw, self._a, out=out[i])
            out[i] += self._b
        return out
