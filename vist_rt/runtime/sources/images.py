"""A folder of images, in natural order, at a given rate."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vist_rt.errors import VistError
from vist_rt.runtime.sources.base import Frame, Source

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key so that frame2 < frame10 (digit runs compare as numbers)."""
    return tuple(int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name))


class ImagesSource(Source):
    """Image files of a folder in natural order, one frame each at `index / fps`.

    `index` is the file's position in the sorted list, so a skipped file (unreadable, or another size than
    the first image) leaves a gap in index and time rather than shifting the frames after it.
    """

    live = False

    def __init__(self, directory: str | Path, fps: float = 30.0) -> None:
        super().__init__()
        if not fps or fps <= 0:
            raise VistError(f"images: fps must be > 0, got {fps!r}")
        self.directory = Path(directory)
        self.fps = float(fps)
        self.files: list[Path] = []
        self._next = 0
        self._mode = cv2.IMREAD_COLOR

    def describe(self) -> str:
        shape = "x".join(map(str, self.shape[1::-1])) if self.shape else "?"
        return f"images {self.directory} ({len(self.files)} files, {shape}, {self.fps:g} fps)"

    def _open(self) -> None:
        if not self.directory.is_dir():
            what = "is a file, not a folder (video:PATH plays a video)" if self.directory.exists() else "no such folder"
            raise VistError(f"images: {self.directory}: {what}")
        files = [p for p in self.directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise VistError(f"images: no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} files in {self.directory}")
        self.files = sorted(files, key=lambda p: natural_key(p.name))
        self._next = 0
        # the first readable image fixes the size and grey vs colour; nothing is skipped yet (read() does that)
        for path in self.files:
            probe = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if probe is not None and probe.size:
                grey = probe.ndim == 2 or probe.shape[2] == 1
                self._mode = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
                self.shape = (probe.shape[0], probe.shape[1]) if grey else (probe.shape[0], probe.shape[1], 3)
                return
        raise VistError(f"images: none of the {len(self.files)} image files in {self.directory} can be read")

    def _read(self, timeout: float) -> Frame | None:
        while self._next < len(self.files):
            i = self._next
            self._next += 1
            path = self.files[i]
            image = cv2.imread(str(path), self._mode)
            if image is None or not image.size:
                self._error(f"images: skipped {path.name}: cannot read it as an image")
                continue
            if image.dtype != np.uint8:
                self._error(f"images: skipped {path.name}: {image.dtype} pixels, need 8-bit")
                continue
            if image.shape != self.shape:
                self._error(
                    f"images: skipped {path.name}: size {image.shape[1]}x{image.shape[0]} differs from the "
                    f"first image's {self.shape[1]}x{self.shape[0]}"
                )
                continue
            return Frame(i, round(i * 1e9 / self.fps), image)
        self._finish()
        return None
