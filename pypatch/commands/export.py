"""``pypatch export``: export a backbone to ONNX with a model card (needs the ``export`` extra)."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a backbone (timm name) to ONNX with a pypatch model card",
        description="Export a registered or timm backbone to an ONNX file with a model card. "
        "Checks onnxruntime against torch on real photos and writes nothing if they differ.",
    )
    p.add_argument("--model", required=True,
                   help="registered name (models/registry.json) or any timm model name")
    p.add_argument("--out", required=True, help="output file, FILE.onnx")
    p.add_argument("--input-size", type=int, help="square input size in pixels (default: registry)")
    p.add_argument("--pool", choices=("gem", "avg", "cls"), help="pooling (default: registry)")
    p.add_argument("--checkpoint", help="local weights file (for offline ViTs or fine-tunes)")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                   help="--no-pretrained exports seeded random weights (tests, no network)")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights (default 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pypatch.models import export_model, file_sha256

    card = export_model(args.model, args.out, input_size=args.input_size, pool=args.pool,
                        checkpoint=args.checkpoint, pretrained=args.pretrained, seed=args.seed)
    h, w = card["input_size"][1:]
    print(f"wrote {args.out}: {card['name']} ({card['weights']}), input {h}x{w}"
          f"{' (dynamic)' if card['dynamic_size'] else ''}, {card['pooling']} -> {card['dim']}-d, "
          f"sha256 {file_sha256(args.out)}")
    return 0
