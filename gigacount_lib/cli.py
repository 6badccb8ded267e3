"""The ``gigacount`` command line. Sub-commands are added by the subject modules' issues.

    gigacount synth --out DIR --n-train N --n-test M --seed S     write the synthetic dataset
    gigacount reproduce [--quick]                                 execute every notebook
    gigacount download NAME --root DIR [--sha256 HEX]             fetch and verify an official dataset
    gigacount train --preset P [--data ROOT --dataset D] [--out DIR] [--resume] [--set FIELD=VALUE ...]
    gigacount eval CKPT [--data ROOT --dataset D] [--protocol official|heldout] [--out DIR]
    gigacount predict CKPT IMAGE_OR_FOLDER... [--out DIR]
    gigacount slides [--run DIR | --unexecuted] [--out DIR] [--only NN ...]   reveal.js decks, offline
    gigacount site [--run DIR | --unexecuted] [--out DIR]                    the course site, offline
"""
from __future__ import annotations

import argparse
import sys


def _cmd_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import SyntheticConfig, generate_synthetic_dataset

    try:
        config = SyntheticConfig(n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                                 width=args.width, height=args.height)
        root = generate_synthetic_dataset(args.out, config, overwrite=args.overwrite, workers=args.workers)
    except (OSError, ValueError) as exc:  # FileExistsError / NotADirectoryError name the folder
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
    from .reproduce import run_from_args

    return run_from_args(args)


def _fail(command: str, exc: BaseException) -> int:
    print(f"gigacount {command}: {' '.join(str(exc).split())}", file=sys.stderr)
    return 2


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import get_preset
    from .train import StopTraining, train

    try:
        config = get_preset(args.preset)
        overrides = list(args.set or [])
        if args.data is not None:
            overrides.append(f"data.root={args.data}")
            if args.dataset is None:
                overrides.append("data.dataset=qnrf")
        if args.dataset is not None:
            overrides.append(f"data.dataset={args.dataset}")
        if args.device is not None:
            overrides.append(f"device={args.device}")
        config = config.override(*overrides)
        out = args.out or f"runs/{args.preset}"
        summary = train(config, out, resume=args.resume, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, FileExistsError, StopTraining) as exc:
        return _fail("train", exc)
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            return _fail("train", RuntimeError(f"{exc}. The batch does not fit in memory: lower data.batch_size "
                                               "(e.g. --set data.batch_size=8) or data.crop_size"))
        raise
    test = summary.get("test")
    line = f"run {summary['status']} after {summary['epochs_run']} epochs; checkpoints in {out}"
    if test:
        line += (f"; test MAE {test['mae']:.2f}, RMSE {test['rmse']:.2f}, "
                 f"{summary['mae_ratio_to_trivial']:.3f} x the mean-count predictor ({summary['protocol_label']})")
    print(line)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError, build_model_from_checkpoint, load_checkpoint
    from .data.datasets import build_dataset
    from .evaluate import evaluate_model, protocol_label
    from .utils import select_device

    try:
        blob = load_checkpoint(args.checkpoint)
        data = blob["config"]["data"]
        dataset = args.dataset or ("qnrf" if args.data else data["dataset"])
        kwargs = {k: data[k] for k in ("min_size", "max_size") if data.get(k) is not None}
        if dataset == "synthetic":
            kwargs.update(quick=data.get("synthetic_quick", False), seed=0)
        test = build_dataset(dataset, args.data if args.data else data["root"], "test", **kwargs)
        device = select_device(args.device)
        model = build_model_from_checkpoint(blob, device=device)
        config = blob["config"]
        trained_with = config.get("protocol", "heldout")
        protocol = args.protocol or trained_with
        if protocol != trained_with:
            print(f"warning: {args.checkpoint} was selected under the {trained_with!r} protocol; the label "
                  f"{protocol!r} describes how a checkpoint was chosen, not how it is evaluated", file=sys.stderr)
        if args.full_image:
            window = stride = None
        else:  # the window the run evaluated with (the official 224/224 unless its preset says otherwise)
            window = args.window or config.get("eval_window")
            stride = args.stride or (args.window if args.window else config.get("eval_stride")) or window
        result = evaluate_model(model, test, device=device, window=window, stride=stride if window else None,
                                protocol=protocol)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        return _fail("eval", exc)
    if args.out:
        result.save(args.out)
    m = result.metrics
    print(f"{args.checkpoint}: {dataset} test, {m['images']} images: MAE {m['mae']:.2f}, RMSE {m['rmse']:.2f}, "
          f"NAE {m['nae']:.3f} [{protocol_label(protocol)}]")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError, build_model_from_checkpoint
    from .predict import collect_images, predict_images
    from .utils import select_device

    try:
        device = select_device(args.device)
        model = build_model_from_checkpoint(args.checkpoint, device=device)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        return _fail("predict", exc)
    images = collect_images(args.images)
    if not images:
        return _fail("predict", FileNotFoundError(f"no image files in {args.images}"))
    rows = predict_images(model, images, args.out, device=device, bf16=False if args.fp32 else None,
                          compile=args.compile)
    for row in rows:
        print(f"{row['image']}: {row['count']:.1f}")
    if args.out:
        print(f"counts and density overlays written to {args.out}")
    return 0 if rows else 2


def _course_run(args: argparse.Namespace):
    """--run DIR, --unexecuted (False) or the newest reproduction run (None)."""
    return False if args.unexecuted else args.run


def _cmd_slides(args: argparse.Namespace) -> int:
    from .slides import build_slides, notebook_sources

    try:
        sources = notebook_sources(_course_run(args), reports_dir=args.reports_dir)
        decks = build_slides(args.out, sources=sources, only=args.only, mathjax=not args.no_mathjax)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        return _fail("slides", exc)
    labels = {f"{s.name}.slides.html": s.label for s in sources}
    for deck in decks:
        print(f"{deck}  ({labels.get(deck.name, '')})")
    return 0


def _cmd_site(args: argparse.Namespace) -> int:
    from .site import build_site

    try:
        index = build_site(args.out, run=_course_run(args), reports_dir=args.reports_dir,
                           mathjax=not args.no_mathjax)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        return _fail("site", exc)
    print(f"course site written; open {index} in a browser (no server needed)")
    return 0


def _cmd_readme_results(args: argparse.Namespace) -> int:
    from .readme_results import results_markdown, update_readme

    try:
        if args.print:
            print(results_markdown(args.run), end="")
        else:
            print(f"{update_readme(args.readme, args.run)}: results section rewritten from {args.run}")
    except (FileNotFoundError, ValueError) as exc:
        return _fail("readme-results", exc)
    return 0


def _add_course_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run", default=None, metavar="DIR",
                       help="reproduction run folder to render the executed notebooks from "
                            "(default: the newest under --reports-dir, if any)")
    which.add_argument("--unexecuted", action="store_true",
                       help="render the committed notebooks (no outputs) even when a run exists")
    parser.add_argument("--reports-dir", default=None, help="where to look for runs (default: reports/)")
    parser.add_argument("--out", default=None, help=f"output folder (default: {default_out})")
    parser.add_argument("--no-mathjax", action="store_true",
                        help="leave LaTeX as its $...$ source (and copy no MathJax)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gigacount", description="GigaCount course tools")
    sub = parser.add_subparsers(dest="command", required=True)

    from .data.synthetic.config import MAX_SIDE
    from .utils import cli_checked, cli_int, cli_positive_float

    synth = sub.add_parser("synth", help="write the embedded synthetic crowd dataset (UCF-QNRF layout)")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--n-train", type=cli_int(1), default=300, help="training images (>= 1)")
    synth.add_argument("--n-test", type=cli_int(1), default=100, help="test images (>= 1)")
    synth.add_argument("--seed", type=cli_int(0), default=0)
    synth.add_argument("--width", type=cli_int(32, MAX_SIDE), default=512, help=f"pixels (32..{MAX_SIDE})")
    synth.add_argument("--height", type=cli_int(32, MAX_SIDE), default=384, help=f"pixels (32..{MAX_SIDE})")
    synth.add_argument("--overwrite", action="store_true",
                       help="replace a synthetic dataset already in --out: exactly the files its synthetic.json "
                            "lists; a folder holding anything else is refused")
    synth.add_argument("--workers", type=cli_int(1), default=1, help="processes used to render images")
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
    from .data.download import check_sha256

    dl.add_argument("--sha256", type=cli_checked(check_sha256, "sha256"), default=None,
                    help="expected SHA-256 of the archive (64 hex characters)")
    dl.add_argument("--timeout", type=cli_positive_float("seconds"), default=None,
                    help="network timeout in seconds (default $GIGACOUNT_NET_TIMEOUT or 10)")
    dl.add_argument("--no-progress", action="store_true", help="no progress bar")
    dl.set_defaults(func=_cmd_download)

    from .config import list_presets

    tr = sub.add_parser("train", help="train a model from a preset (resumable; torchrun for several GPUs)",
                        description="Train with a preset of gigacount_lib.config. Checkpoints, config.json, "
                                    "run.json, log.csv and summary.json go to --out. Runs under torchrun "
                                    "--nproc_per_node N (DistributedDataParallel) unchanged.")
    tr.add_argument("--preset", required=True, choices=list_presets())
    tr.add_argument("--data", default=None, help="dataset root (default: the embedded synthetic dataset)")
    tr.add_argument("--dataset", default=None, help="qnrf | sha | shb | nwpu | jhu | synthetic")
    tr.add_argument("--out", default=None, help="run folder (default runs/<preset>)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    tr.add_argument("--device", default=None, help="auto | cpu | cuda (default: the preset's)")
    tr.add_argument("--set", action="append", metavar="FIELD=VALUE",
                    help="override a config field, e.g. --set optim.lr=1e-3 --set data.batch_size=8")
    tr.add_argument("--no-progress", action="store_true", help="no progress bars")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="evaluate a checkpoint on a test split")
    ev.add_argument("checkpoint")
    ev.add_argument("--data", default=None, help="dataset root (default: the one the checkpoint was trained on)")
    ev.add_argument("--dataset", default=None)
    ev.add_argument("--protocol", choices=["official", "heldout"], default=None,
                    help="how the checkpoint was selected, for the label of the result (default: the run's)")
    ev.add_argument("--window", type=cli_int(8), default=None,
                    help="sliding-window size (default: the run's eval_window; official 224)")
    ev.add_argument("--stride", type=cli_int(8), default=None, help="sliding-window stride (default: the run's)")
    ev.add_argument("--full-image", action="store_true", help="one pass over each image (when it fits)")
    ev.add_argument("--out", default=None, help="folder for per_image.csv and metrics.json")
    ev.add_argument("--device", default="auto")
    ev.set_defaults(func=_cmd_eval)

    pr = sub.add_parser("predict", help="count people in images with a checkpoint")
    pr.add_argument("checkpoint")
    pr.add_argument("images", nargs="+", help="image files or folders")
    pr.add_argument("--out", default=None, help="folder for counts.csv and the density overlays")
    pr.add_argument("--device", default="auto")
    pr.add_argument("--fp32", action="store_true",
                    help="float32 inference (default: bfloat16 autocast where the device runs it natively)")
    pr.add_argument("--compile", action="store_true",
                    help="torch.compile the model: slow first image per size, faster after (many images of one size)")
    pr.set_defaults(func=_cmd_predict)

    from .reproduce import add_arguments as add_reproduce_arguments

    rep = sub.add_parser("reproduce", help="execute every notebook headless into one report (see README)")
    add_reproduce_arguments(rep)
    rep.set_defaults(func=_cmd_reproduce)

    sl = sub.add_parser("slides", help="render each notebook to a reveal.js deck that opens offline",
                        description="Render notebooks/NN_*.ipynb to reveal.js decks (NN_name.slides.html) with "
                                    "reveal.js and MathJax copied beside them, so the decks open from disk with "
                                    "no network. Executed notebooks of the newest reproduction run are used when "
                                    "there is one (make reproduce), the committed notebooks otherwise.")
    _add_course_arguments(sl, "site/slides")
    sl.add_argument("--only", nargs="+", default=None, metavar="NN", help="only these notebooks (e.g. 04)")
    sl.set_defaults(func=_cmd_slides)

    st = sub.add_parser("site", help="build the offline course site (index, notebook pages, slides, report)",
                        description="Build one static folder: index.html (the course outline), each notebook as "
                                    "an HTML page, its slides and Colab link, and the newest run's report.html. "
                                    "Every link is relative; open index.html from disk.")
    _add_course_arguments(st, "site")
    st.set_defaults(func=_cmd_site)

    rr = sub.add_parser("readme-results", help="rewrite README.md's results section from a reproduction run",
                        description="Read RUN/manifest.json (written by make reproduce) and replace the text "
                                    "between <!-- results:start --> and <!-- results:end --> in the README with "
                                    "the run's notebook wall times, training numbers, Table 3 and key figures.")
    rr.add_argument("run", help="a reproduction run folder, reports/<run>/")
    rr.add_argument("--readme", default="README.md", help="the file to rewrite (default: README.md)")
    rr.add_argument("--print", action="store_true", help="print the section instead of rewriting the file")
    rr.set_defaults(func=_cmd_readme_results)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
