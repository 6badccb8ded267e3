"""The ``gigacount`` command line. Sub-commands are added by the subject modules' issues.

    gigacount synth --out DIR --n-train N --n-test M --seed S     write the synthetic dataset
    gigacount reproduce [--quick]                                 execute every notebook
    gigacount download NAME --root DIR [--sha256 HEX]             fetch and verify an official dataset
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


def _cmd_download(args: argparse.Namespace) -> int:
    from .data.download import ChecksumError, DownloadError, ManualDownloadRequired, download_dataset

    try:
        data_root = download_dataset(args.name, args.root, sha256=args.sha256, timeout=args.timeout,
                                     progress=not args.no_progress)
    except ManualDownloadRequired as exc:  # several lines: the instructions are the point
        print(f"gigacount download: {exc}", file=sys.stderr)
        return 2
    except (ChecksumError, DownloadError, FileExistsError, ValueError, OSError) as exc:
        print(f"gigacount download: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"dataset ready: pass {data_root} as data_root")
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

    dl = sub.add_parser(
        "download", help="download, verify and extract an official dataset (UCF-QNRF; others: instructions)",
        description=(
            "Download, verify and extract an official crowd-counting dataset into --root. Only UCF-QNRF has a "
            "direct official archive; for ShanghaiTech, NWPU-Crowd and JHU-Crowd++ this prints how to get them "
            "by hand. An archive already in --root (e.g. fetched with a browser) is used instead of "
            "downloading. Checksum policy: pin if known, otherwise record. No published SHA-256 is known for "
            "the official archives, so none is built in: --sha256 HEX verifies against a value you trust; "
            "without it the SHA-256 is computed locally, recorded in --root/download.json, and later runs "
            "verify the archive against the recorded value (this catches later corruption, not a bad first "
            "download)."))
    dl.add_argument("name", help="dataset: qnrf (ucf-qnrf), sha, shb, nwpu, jhu")
    dl.add_argument("--root", required=True, help="folder for the archive, the extracted data and download.json")
    dl.add_argument("--sha256", default=None, help="expected SHA-256 of the archive (64 hex characters)")
    dl.add_argument("--timeout", type=float, default=None,
                    help="network timeout in seconds (default $GIGACOUNT_NET_TIMEOUT or 10)")
    dl.add_argument("--no-progress", action="store_true", help="no progress bar")
    dl.set_defaults(func=_cmd_download)

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
