"""`fm4npp model ...` commands."""

from __future__ import annotations

import json
import sys


def model_info(preset: str, seq_len: int = 2048, bidirectional: bool = False) -> dict:
    """Size and cost of a preset, computed analytically (nothing is allocated); a
    bidirectional backbone counts its second (reversed-scan) mixer per block."""
    from .flops import count_params, flops_per_token
    from .presets import PAPER_PARAMS, get_preset

    cfg = get_preset(preset, **({"bidirectional": True} if bidirectional else {}))
    info = {
        "preset": preset,
        "bidirectional": cfg.bidirectional,
        "params": count_params(cfg),
        "seq_len": seq_len,
        "flops_per_token": flops_per_token(cfg, seq_len),  # forward + backward
        "flops_per_token_forward": flops_per_token(cfg, seq_len, backward=False),
        "config": cfg.to_dict(),
    }
    if preset in PAPER_PARAMS and not cfg.bidirectional:
        info["paper_params"] = PAPER_PARAMS[preset]
    return info


def _info(args) -> int:
    try:
        info = model_info(args.preset, args.seq_len, args.bidirectional)
    except KeyError as exc:
        print(f"fm4npp model info: {exc.args[0]}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("model", help="model presets and sizes")
    sub = p.add_subparsers(dest="model_command", required=True)
    info = sub.add_parser("info", help="parameters and FLOPs per token of a preset (JSON)")
    info.add_argument("--preset", required=True, help="m1..m6, w8, w16, w24, w32, w64, w128")
    info.add_argument("--seq-len", type=int, default=2048, help="sequence length for FLOPs")
    info.add_argument("--bidirectional", action="store_true",
                      help="the backbone that also scans each event backwards (two mixers per block)")
    info.set_defaults(func=_info)
