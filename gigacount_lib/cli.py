"""The ``gigacount`` command line. Sub-commands are added by the subject modules' issues.

    gigacount synth --out DIR --n-train N --n-test M --seed S     write the synthetic dataset
    gigacount reproduce [--quick]                                 execute every notebook
"""
from __future__ import annotations

import argparse
import sys


def _cmd_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import SyntheticConfig, generate_synthetic_dataset

    config = SyntheticConfig(n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                             width=args.width, height=args.height)
    try:
        root = generate_synthetic_dataset(args.out, config, overwrite=args.overwrite, workers=args.workers)
    except FileExistsError as exc:
        print(f"gigacount synth: {exc}", file=sys.stderr)
        return 2
    print(f"synthetic dataset written to {root}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import main as reproduce_main

    return reproduce_main((["--quick"] if args.quick else []) + ["--device", args.device])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gigacount", description="GigaCount course tools")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write the embedded synthetic crowd dataset (UCF-QNRF layout)")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--n-train", type=int, default=300)
    synth.add_argument("--n-test", type=int, default=100)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--width", type=int, default=512)
    synth.add_argument("--height", type=int, default=384)
    synth.add_argument("--overwrite", action="store_true",
                       help="replace a synthetic dataset already in --out (other data is never replaced)")
    synth.add_argument("--workers", type=int, default=1, help="processes used to render images")
    synth.set_defaults(func=_cmd_synth)

    rep = sub.add_parser("reproduce", help="execute every notebook headless (see README)")
    rep.add_argument("--quick", action="store_true")
    rep.add_argument("--device", default="auto")
    rep.set_defaults(func=_cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
