"""Stage download: CIFAR-10 from the source in params.yaml's data section into the prepared arrays.

    python stages/download.py --out PREPARED [--params params.yaml]   (dvc.yaml passes --out)

Writes the prepared folder (train/test images and labels as .npy, classes.json, manifest.json)
whole or not at all. The source is the official download (data.source: cifar10), a local official
archive (archive) or an image-folder tree (folder); see onecycle/data/sources.py.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from onecycle import data
from onecycle.cli import parser, run_stage
from onecycle.params import load_params

log = logging.getLogger("download")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    run_stage(lambda: download(args.params, args.out), [args.out])


def download(params_path: Path, out: Path) -> None:
    start = time.perf_counter()
    params = load_params(params_path)
    manifest = data.prepare(params.data, out)
    counts = manifest["counts"]
    log.info(
        "prepared %d train + %d test images, %d classes, from %s %s in %.1f s -> %s",
        counts["train"]["total"], counts["test"]["total"], len(manifest["classes"]),
        manifest["source"], manifest["path"], time.perf_counter() - start, out,
    )


if __name__ == "__main__":
    main()
