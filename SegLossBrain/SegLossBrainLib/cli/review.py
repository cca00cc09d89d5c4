"""``seglossbrain review``: look at, correct and fine-tune on results in a web browser (the ``review`` extra).

The web app lives in its own package, ``SegLossBrainReview`` (trame-slicer on Slicer's core); it is imported inside
the handler only, so the engine and every other command stay free of Slicer, VTK and trame.
"""
from __future__ import annotations


def run_review(args, reporter) -> int:
    from SegLossBrainReview.launch import run

    return run(args.target, labels=args.labels, host=args.host, port=args.port, pairs_dir=args.pairs_dir,
               finetune_args=args.finetune_option or (), finetune_minutes=args.finetune_minutes)


def add_review_command(commands) -> None:
    review = commands.add_parser(
        "review", help="review and correct results in a web browser, then fine-tune on the corrections",
        description="Serve a local web page (trame-slicer) showing a scan with its 19 segments in axial, coronal, "
                    "sagittal and 3D views, its volumes and QC flags; correct with paint / erase / scissors, save "
                    "the correction as a fine-tuning pair, fine-tune and activate the new version. Needs "
                    "pip install \"seglossbrain[review]\". Exit 2 on bad input, with nothing written.")
    review.add_argument("target", metavar="SCAN | RESULTS_FOLDER",
                        help="a brain MRI (segmented on opening unless --labels is given), or a 'seglossbrain "
                             "batch' output folder (its cases listed, QC-flagged first)")
    review.add_argument("--labels", help="the labelmap of SCAN (a 'segment' output, on the scan's grid)")
    review.add_argument("--port", type=int, default=8080, help="port to serve on (default 8080)")
    review.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (default 127.0.0.1: this machine only; another address is "
                             "reachable by others and printed with a warning)")
    review.add_argument("--pairs-dir", help="the site's pairs folder, where Save correction writes "
                                            "(default $SEGLOSSBRAIN_PAIRS or ~/.seglossbrain/pairs)")
    review.add_argument("--finetune-minutes", type=float, default=8.0,
                        help="time budget of a fine-tune started from the page (finetune --max-minutes; default 8)")
    review.add_argument("--finetune-option", action="append", metavar="OPTION",
                        help="more 'seglossbrain finetune' options for runs started from the page, one per use, "
                             "e.g. --finetune-option=--patch-size=32")
    review.set_defaults(handler=run_review)
