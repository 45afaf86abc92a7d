"""ONNX export of sepp models (and of any image classifier), with a dynamic batch dimension.

    python -m sepp.export --model se_resnet50 [--weights w.safetensors] --output m.onnx [--no-dynamo]

A sepp model exports through its pure-PyTorch twin (see :mod:`sepp._twin`), so the file holds standard ONNX operators
only. Weights come from a safetensors file (:func:`sepp.load_weights`, no pickle); the file is written atomically.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional, Union

import torch

from .files import write_atomic
from .models import create_model, model_names
from .weights import load_weights

__all__ = ["export_onnx", "main"]

PathLike = Union[str, "os.PathLike[str]"]


def export_onnx(
    model: torch.nn.Module,
    path: PathLike,
    example: torch.Tensor,
    *,
    dynamo: bool = True,
    opset: Optional[int] = None,
    dynamic_batch: bool = True,
    input_name: str = "input",
    output_name: str = "logits",
) -> Path:
    """Exports ``model`` (as it is: call ``.eval()`` first for inference) at the shape of ``example``
    ([N, C, H, W]) to the ONNX file ``path``, written atomically; returns the path.

    ``dynamo`` picks the exporter (torch.export based, or the TorchScript one); ``opset`` None is the exporter's
    default; ``dynamic_batch`` makes the first dimension of the input and the output symbolic (``"batch"``).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"export_onnx: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example, torch.Tensor) or example.dim() != 4 or example.shape[0] < 1:
        got = f"shape {list(example.shape)}" if isinstance(example, torch.Tensor) else type(example).__name__
        raise ValueError(f"export_onnx: expected an example image batch [N, C, H, W], got {got}")
    if dynamic_batch and example.shape[0] < 2:
        # torch.export specializes a dimension of size 1, so a batch of 1 cannot be made dynamic.
        example = example.expand(2, *example.shape[1:]).contiguous()
    names = dict(input_names=[input_name], output_names=[output_name])
    if dynamo:
        shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset, dynamic_shapes=shapes, **names)
        data = program.model_proto.SerializeToString()
    else:
        axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
        buffer = io.BytesIO()
        kwargs = {} if opset is None else {"opset_version": opset}
        torch.onnx.export(model, (example,), buffer, dynamo=False, dynamic_axes=axes, **names, **kwargs)
        data = buffer.getvalue()
    path = Path(path)
    write_atomic(path, data)
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sepp.export", description="Export a sepp model to ONNX with a dynamic batch dimension."
    )
    p.add_argument("--model", required=True, metavar="NAME", help=f"a sepp model: {', '.join(model_names())}")
    p.add_argument("--weights", type=Path, help="a safetensors file of the model's state_dict (default: fresh init)")
    p.add_argument("--output", type=Path, required=True, help="the ONNX file to write")
    p.add_argument(
        "--dynamo",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the torch.export based exporter (default), or with --no-dynamo the TorchScript one",
    )
    p.add_argument("--image-size", type=int, default=224, help="height and width of the example input (default 224)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset version (default: the exporter's)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; returns 0, or exits with a message naming what was wrong."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.model not in model_names():
        parser.error(f"--model: unknown model {args.model!r}; expected one of: {', '.join(model_names())}")
    if args.image_size < 32:
        parser.error(f"--image-size: expected at least 32 (the network's stride), got {args.image_size}")
    folder = args.output.parent if str(args.output.parent) else Path(".")
    if not folder.is_dir():
        parser.error(f"--output: the folder {str(folder)!r} does not exist")
    try:
        model = create_model(args.model)
        if args.weights is not None:
            load_weights(model, args.weights)
        model.eval()
        example = torch.randn(2, model.options["in_chans"], args.image_size, args.image_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(model, args.output, example, dynamo=args.dynamo, opset=args.opset)
    except (ValueError, OSError) as e:
        parser.exit(1, f"{parser.prog}: error: {e}\n")
    size = args.output.stat().st_size / 2**20
    print(f"wrote {args.output} ({size:.1f} MiB, {'dynamo' if args.dynamo else 'TorchScript'} exporter)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
