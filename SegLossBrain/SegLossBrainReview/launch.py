"""What ``seglossbrain review`` runs: check everything (exit 2 with one sentence, nothing written), then serve.

Bound to 127.0.0.1 unless ``--host`` names another address, which is printed with a warning: the page can edit
labels, start fine-tunes and change the default model, and has no login.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .inputs import ReviewInputError, cases_for, check_host, check_pairs_folder, check_port, read_case


def missing_web_packages() -> list[str]:
    import importlib.util

    return [name for module, name in (("trame", "trame"), ("trame_slicer", "trame-slicer"), ("slicer", "slicer-core"))
            if importlib.util.find_spec(module) is None]


def run(target, labels=None, host: str = "127.0.0.1", port: int = 8080, pairs_dir=None, finetune_args=(),
        finetune_minutes: float = 8.0) -> int:
    from SegLossBrainLib.paths import user_pairs_dir

    cases, kind = cases_for(Path(target), labels)
    first_index = next(i for i, c in enumerate(cases) if c.status == "ok")
    first = read_case(cases[first_index])
    loopback = check_host(host)
    check_port(host, port)
    pairs = check_pairs_folder(Path(pairs_dir) if pairs_dir else user_pairs_dir())
    missing = missing_web_packages()
    if missing:
        raise ReviewInputError(f"the review app needs {', '.join(missing)}: pip install \"seglossbrain[review]\" "
                               "(or pip install -e \".[review]\" in a source checkout)")
    if not loopback:
        print(f"seglossbrain review: warning: serving on {host}: anyone who can reach this address can see the "
              "scans, edit labels and change the default model (there is no login)", file=sys.stderr)
    from trame.app import get_server

    from .app import ReviewApp

    server = get_server("seglossbrain-review", client_type="vue3")
    log = lambda message: print(f"seglossbrain review: {message}", file=sys.stderr, flush=True)  # noqa: E731
    ReviewApp(server, cases, pairs, first_index, first, finetune_args=finetune_args,
              finetune_minutes=finetune_minutes, log=log)
    what = f"{len(cases)} cases of {target}" if kind == "folder" else str(target)
    log(f"reviewing {what}; corrections go to {pairs}")
    log(f"open http://{host}:{port}/ in a browser (Ctrl+C stops)")
    server.start(host=host, port=port, open_browser=False, show_connection_info=False)
    return 0
