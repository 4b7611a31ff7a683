"""Feature extractors: uint8 frames -> float32 tokens `[N, grid*grid, D]` for the temporal model.

Every extractor has a `.spec` (a JSON dict, stored in checkpoints) from which `from_spec` rebuilds it.
The spec says what makes the features what they are (backbone, block, weights identity, image
size, preprocessing); the backend, device and precision are run-time choices kept in `.runtime`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vist_rt.errors import VistError
from vist_rt.features.backbones import PATCH, get_backbone
from vist_rt.features.backends import Backend, make_backend, resolve
from vist_rt.features.preprocess import Preprocessor, PreprocessSpec
from vist_rt.features.vit import RANDOM_INITS, DINOv2Tokens, draw_layer_scales, resolve_block, state_sha256
from vist_rt.features.weights import WeightsError, load_into, read_weights


class Extractor:
    """Base: preprocessing + a token function; callable on uint8 frames."""

    spec: dict[str, Any]
    preprocess: Preprocessor
    dim: int
    is_dinov2: bool

    @property
    def tokens(self) -> int:
        """Tokens per frame (grid * grid)."""
        return (self.preprocess.spec.image_size // PATCH) ** 2

    @property
    def runtime(self) -> dict[str, Any]:
        """How it runs here: backend, device, precision."""
        return {"backend": "numpy", "device": "cpu", "precision": "fp32"}

    def describe(self) -> str:
        """One line saying honestly what the features are."""
        raise NotImplementedError

    def tokens_from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """float32 [N, 3, S, S] preprocessed pixels -> float32 [N, T, D]."""
        raise NotImplementedError

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames [H,W], [H,W,3] or [N,H,W(,3)] (any size) -> float32 [N, grid*grid, D]."""
        return self.tokens_from_pixels(self.preprocess(frames))

    def close(self) -> None:
        """Release backend resources."""

    def __enter__(self) -> Extractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PatchesExtractor(Extractor):
    """Raw pixel patches on the ViT's grid, no ViT: the paper's no-prior ablation and a fast CPU baseline.

    D = 3 * 14 * 14 = 588 ("rgb") or 14 * 14 = 196 ("grey": mean of the normalised channels).
    """

    is_dinov2 = False

    def __init__(self, image_size: int = 224, channels: str = "rgb", crop: str = "center", color: str = "bgr"):
        if channels not in ("rgb", "grey"):
            raise VistError(f"patches channels must be 'rgb' or 'grey', got {channels!r}")
        if image_size % PATCH:
            raise VistError(f"image size must be a multiple of {PATCH}, got {image_size}")
        self.preprocess = Preprocessor(PreprocessSpec(image_size=image_size, crop=crop, color=color))
        self.channels = channels
        self.dim = (3 if channels == "rgb" else 1) * PATCH * PATCH
        self.spec = {
            "kind": "patches",
            "image_size": image_size,
            "grid": image_size // PATCH,
            "dim": self.dim,
            "channels": channels,
            "preprocess": self.preprocess.spec.to_dict(),
            "dinov2": False,
        }

    def describe(self) -> str:
        return f"raw {self.channels} pixel patches ({self.dim}-dim, no ViT): NOT DINOv2 features"

    def tokens_from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        n, _, s, _ = pixels.shape
        g = s // PATCH
        if self.channels == "grey":
            pixels = pixels.mean(axis=1, keepdims=True)
        c = pixels.shape[1]
        x = pixels.reshape(n, c, g, PATCH, g, PATCH).transpose(0, 2, 4, 1, 3, 5)
        return np.ascontiguousarray(x.reshape(n, g * g, c * PATCH * PATCH), dtype=np.float32)


class DINOv2Extractor(Extractor):
    """DINOv2 patch tokens of one block, from a local weights file (or random, seeded, on request).

    backbone: vits14, vitb14, vitl14 (published), vitg14, each also as `*_reg` (4 registers).
    weights: Meta .pth, timm .safetensors/.bin, or a Hugging Face folder. weights=None needs `seed`
    (random weights: the features are then NOT DINOv2's, and the spec and `describe()` say so; `random_init`
    "scaled": timm's init with every block's layer scales drawn, so that each block changes the tokens as trained
    ones do; "timm": timm's init as is, whose 1e-5 layer scales leave the tokens ~ the patch embedding).
    block: 0-based over the transformer blocks, negative from the end. norm: apply the final norm.
    """

    is_dinov2 = True

    def __init__(
        self,
        backbone: str = "vitl14",
        weights: str | Path | None = None,
        block: int = -1,
        image_size: int = 224,
        seed: int | None = None,
        *,
        random_init: str = "scaled",
        norm: bool = False,
        crop: str = "center",
        color: str = "bgr",
        backend: str = "torch",
        device: str = "cpu",
        precision: str = "fp32",
        cache_dir: str | Path = "engines",
        threads: int | None = None,
        cuda_graphs: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        bb = get_backbone(backbone)
        if weights is None and seed is None:
            raise VistError(
                f"no weights for DINOv2 {bb.title}: give a weights file (--vit-weights PATH), "
                "or ask for random, seeded features explicitly (seed=N / --random-vit N)"
            )
        if weights is not None and seed is not None:
            raise VistError("give either a weights file or a random seed, not both")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
            raise VistError(f"random seed must be an integer in 0..2**63-1, got {seed!r}")
        if random_init not in RANDOM_INITS:
            raise VistError(f"random init must be one of {', '.join(RANDOM_INITS)}, got {random_init!r}")
        self.choice = resolve(backend, device, precision)  # a path this machine cannot run fails here, first
        self.preprocess = Preprocessor(PreprocessSpec(image_size=image_size, crop=crop, color=color))
        if weights is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))  # type: ignore[arg-type]
                module = DINOv2Tokens(bb, block, image_size, norm, full_init=True)
                if random_init == "scaled":
                    draw_layer_scales(module.vit)
            ident: dict[str, Any] = {"kind": "random", "seed": int(seed)}  # type: ignore[arg-type]
            if random_init != "timm":  # specs from before the choice (timm's init) have no "init"
                ident["init"] = random_init
        else:
            w = read_weights(weights)
            module = DINOv2Tokens(bb, block, image_size, norm)
            load_into(module.vit, w, bb, image_size)
            ident = {"kind": "file", "sha256": w.sha256, "format": w.source_format, "name": Path(weights).name}
        module.eval()
        self.is_dinov2 = weights is not None
        self.dim = bb.dim
        self.spec = {
            "kind": "dinov2",
            "backbone": bb.name,
            "block": module.block,
            "norm": norm,
            "image_size": image_size,
            "grid": image_size // PATCH,
            "dim": bb.dim,
            "weights": ident,
            "weights_sha256": state_sha256(module),  # of the blocks actually used
            "preprocess": self.preprocess.spec.to_dict(),
            "dinov2": self.is_dinov2,
        }
        self._backbone = bb
        self.module = module
        self.backend: Backend = make_backend(
            backend,
            module,
            spec=self.spec,
            device=device,
            precision=precision,
            cache_dir=cache_dir,
            threads=threads,
            cuda_graphs=cuda_graphs,
            log=log,
            choice=self.choice,
        )

    @property
    def runtime(self) -> dict[str, Any]:
        """backend, device, precision, and `chosen` (why) where precision auto chose the path."""
        b = self.backend
        chosen = {"chosen": self.choice.why} if self.choice.why else {}
        return {"backend": b.name, "device": b.device, "precision": b.precision, **chosen}

    def describe(self) -> str:
        what = f"{self._backbone.title} block {self.spec['block']}{' +norm' if self.spec['norm'] else ''}"
        w = self.spec["weights"]
        if not self.is_dinov2:
            return f"RANDOM {what} (seed {w['seed']}): NOT DINOv2 features"
        return f"DINOv2 {what} ({w['name']}, sha256 {w['sha256'][:12]})"

    def tokens_from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        s = self.spec["image_size"]
        if pixels.ndim != 4 or pixels.shape[1:] != (3, s, s):
            raise VistError(f"pixels must be [N, 3, {s}, {s}], got {list(pixels.shape)}")
        return self.backend(pixels)

    def tokens_of_blocks(self, frames: np.ndarray, blocks: Sequence[int]) -> np.ndarray:
        """uint8 frames -> float32 `[len(blocks), N, grid*grid, D]`: the tokens after each of `blocks` (0-based, at
        most this extractor's block) from one pass of the ViT in float32 torch, as an extractor of that block gives."""
        depth = self._backbone.depth
        wanted = [resolve_block(b, self._backbone) for b in blocks]
        if not wanted or max(wanted) > self.spec["block"]:
            raise VistError(f"blocks {list(blocks)} must be some of 0..{self.spec['block']} (of {depth})")
        param = next(self.module.parameters())
        pixels = torch.from_numpy(self.preprocess(frames)).to(param.device)
        with torch.no_grad():
            out = self.module.vit.forward_intermediates(
                pixels, indices=wanted, norm=self.spec["norm"], output_fmt="NLC", intermediates_only=True
            )
        return np.stack([o.float().cpu().numpy() for o in out])

    def close(self) -> None:
        self.backend.close()


# spec entries that define the features: a rebuilt extractor must reproduce each of them exactly
DEFINING = ("kind", "backbone", "block", "norm", "image_size", "grid", "dim", "weights", "weights_sha256", "preprocess")


def from_spec(spec: dict[str, Any], weights: str | Path | None = None, **runtime: Any) -> Extractor:
    """Rebuild the extractor a spec describes (checkpoints store it); `runtime` = backend, device, precision...

    The rebuilt extractor must reproduce every defining entry of the spec (weights identity,
    preprocessing, ...): a spec from a weights file needs that very file, and a random spec that
    this timm/torch no longer initialises the same way is refused rather than run with other weights.
    """
    if not isinstance(spec, dict) or "kind" not in spec:
        raise VistError("extractor spec must be a dict with a 'kind'")
    try:
        ext = _build(spec, weights, runtime)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, VistError):
            raise
        raise VistError(f"extractor spec is incomplete or malformed ({type(exc).__name__}: {exc})") from None
    mine = ext.spec
    differs = [k for k in DEFINING if k in spec and spec[k] != mine.get(k)]
    if differs:
        ext.close()
        w, w2 = spec.get("weights", {}), mine.get("weights", {})
        if "weights" in differs and w.get("kind") == w2.get("kind") == "file":
            raise WeightsError(
                f"{weights} holds other weights than the ones these features were made with "
                f"(sha256 {w2.get('sha256', '')[:12]}, expected {w.get('sha256', '')[:12]} from {w.get('name')})"
            )
        shown = "; ".join(f"{k}: spec {spec[k]!r}, rebuilt {mine.get(k)!r}" for k in differs[:2])
        raise VistError(f"cannot rebuild the extractor this spec describes ({shown[:300]})")
    return ext


def with_random_weights(spec: dict[str, Any], seed: int) -> dict[str, Any]:
    """The same DINOv2 ViT (backbone, block, size, preprocessing: the same cost) with random weights of `seed`:
    a spec for timing where the checkpoint's weights are not at hand (the features are then NOT DINOv2's)."""
    if spec.get("kind") != "dinov2":
        raise VistError(f"random ViT weights replace a DINOv2 ViT's; these features are {spec.get('kind')}, no ViT")
    out = {k: v for k, v in spec.items() if k != "weights_sha256"}  # of other weights: the rebuilt ones say theirs
    return {**out, "weights": {"kind": "random", "seed": seed, "init": "scaled"}, "dinov2": False}


def _build(spec: dict[str, Any], weights: str | Path | None, runtime: dict[str, Any]) -> Extractor:
    pre = spec.get("preprocess", {})
    common = {"crop": pre.get("crop", "center"), "color": pre.get("color", "bgr")}
    if spec["kind"] == "patches":
        if weights is not None:
            raise VistError("the patches extractor has no weights")
        return PatchesExtractor(int(spec["image_size"]), spec.get("channels", "rgb"), **common)
    if spec["kind"] != "dinov2":
        raise VistError(f"unknown extractor kind {spec['kind']!r} (known: dinov2, patches)")
    w = spec["weights"]
    if w["kind"] == "file" and weights is None:
        raise VistError(
            f"these features were made with DINOv2 weights {w['name']} (sha256 {w['sha256'][:12]}): "
            "give that file (--vit-weights PATH)"
        )
    if w["kind"] == "random" and weights is not None:
        raise VistError(f"these features came from RANDOM weights (seed {w['seed']}), not a weights file")
    return DINOv2Extractor(
        spec["backbone"],
        weights,
        int(spec["block"]),
        int(spec["image_size"]),
        seed=w.get("seed") if w["kind"] == "random" else None,
        random_init=w.get("init", "timm") if w["kind"] == "random" else "scaled",
        norm=bool(spec.get("norm", False)),
        **common,
        **runtime,
    )
