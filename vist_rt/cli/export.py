"""`vist-rt export onnx ...`: the ViT token graph or the streaming temporal step as an ONNX file."""

from __future__ import annotations

import argparse

from vist_rt.cli.options import add_extractor_args, int_at_least
from vist_rt.errors import VistError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `export` and its subcommands."""
    export = sub.add_parser("export", help="export graphs for ONNX Runtime / TensorRT")
    kinds = export.add_subparsers(dest="export", metavar="FORMAT", required=True)
    onnx = kinds.add_parser("onnx", help="write an ONNX file (opset >= 17) with vist-rt metadata")
    what = onnx.add_subparsers(dest="graph", metavar="GRAPH", required=True)

    f = what.add_parser("features", help="the ViT: pixels [N,3,S,S] -> tokens [N,T,D] of one block")
    add_extractor_args(f)
    f.add_argument("--out", required=True, metavar="FILE", help="ONNX file to write (not an existing one)")
    f.add_argument("--force", action="store_true", help="replace an existing --out")
    f.add_argument("--opset", type=int_at_least(17), default=17, help="ONNX opset (default 17)")
    f.set_defaults(func=run_features)

    t = what.add_parser("temporal", help="one streaming Vi-ST step, its ring state as explicit inputs/outputs")
    t.add_argument("--checkpoint", required=True, metavar="PATH", help="vist-rt checkpoint (.safetensors)")
    t.add_argument("--batch", type=int_at_least(1), default=1, help="independent streams (default 1)")
    t.add_argument("--out", required=True, metavar="FILE", help="ONNX file to write (not an existing one)")
    t.add_argument("--force", action="store_true", help="replace an existing --out")
    t.add_argument("--opset", type=int_at_least(17), default=17, help="ONNX opset (default 17)")
    t.set_defaults(func=run_temporal)


def _check_out(args: argparse.Namespace) -> None:
    """VistError before any work when --out exists (and --force is not given), is a folder or cannot be written."""
    from vist_rt.files import check_output_file

    check_output_file(args.out, overwrite=args.force, flag="--out")


def _report(path: object) -> None:
    from vist_rt.export.onnx import read_meta

    meta = read_meta(path)  # type: ignore[arg-type]
    print(f"wrote {path} ({meta['kind']}, opset {meta['opset']})")
    for io in ("inputs", "outputs"):
        shown = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in list(meta[io].items())[:6])
        more = f" (+{len(meta[io]) - 6} more)" if len(meta[io]) > 6 else ""
        print(f"  {io}: {shown}{more}")


def run_features(args: argparse.Namespace) -> int:
    """Export the token graph of the extractor the options describe."""
    from vist_rt.cli.options import extractor_from_args
    from vist_rt.features.onnx import export_features_onnx

    if args.extractor != "dinov2":
        raise VistError(
            "only the dinov2 extractor has a graph to export (patches are a reshape): "
            "give --extractor dinov2 and its --vit-weights"
        )
    _check_out(args)
    ext = extractor_from_args(args, backend="torch")
    print(ext.describe())
    _report(export_features_onnx(ext.module, ext.spec, args.out, opset=args.opset))
    return 0


def run_temporal(args: argparse.Namespace) -> int:
    """Export the streaming step of a checkpoint's model, conditioned on its RF set."""
    from vist_rt.model.checkpoint import load_checkpoint
    from vist_rt.model.step_graph import export_step_onnx
    from vist_rt.model.streaming import StreamingViST

    _check_out(args)
    ckpt = load_checkpoint(args.checkpoint)
    stream = StreamingViST.from_model(ckpt.model, ckpt.rf.unsqueeze(0).expand(args.batch, -1, -1, -1))
    _report(export_step_onnx(stream, args.out, opset=args.opset))
    return 0
