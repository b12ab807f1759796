"""Reproduction check: the whole pipeline on a small committed profile, compared with committed metrics.

    python repro/check.py            # run and compare; exit 1 and show the differences if any
    python repro/check.py --update   # run and rewrite repro/expected/ (after an intended change)

The profile (repro/params.yaml) trains a narrow network on generated images for a few epochs
on the CPU, in about a minute. It runs in a temporary copy of the project (a fresh git + DVC
repository), so the user's own outputs are never touched. On the CPU, runs are deterministic:
the default tolerance is zero. Times and speeds are not compared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
PROJECT_FILES = ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "stages", "onecycle"]
METRICS = ["metrics/max_lr.json", "metrics/train.json", "metrics/eval.json"]
VOLATILE = ("seconds", "images_per_second", "device")  # keys that measure the machine, not the result


def env() -> dict:
    """Stage commands run with this interpreter's bin first on PATH, so `python` has the project."""
    out = dict(os.environ)
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    for key in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        out.setdefault(key, "onecycle")
    for key in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        out.setdefault(key, "onecycle@example.invalid")
    return out


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=1800)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(Path(sys.executable).parent / "dvc"), *args], cwd, check)


def project_copy(dest: Path, params_text: str) -> Path:
    """The project's pipeline files in a fresh git + DVC repository at `dest`, first commit made."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    (dest / "params.yaml").write_text(params_text)
    run(["git", "init", "-q", "-b", "main"], dest)
    dvc("init", "-q", cwd=dest)
    shutil.copytree(ROOT / ".dvc" / "plots", dest / ".dvc" / "plots", dirs_exist_ok=True)
    dvc("config", "core.analytics", "false", cwd=dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "project"], dest)
    return dest


def leaves(obj, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a metrics file as dotted keys, without the volatile ones."""
    if isinstance(obj, dict):
        out: dict[str, float] = {}
        for key, value in obj.items():
            if not any(v in key for v in VOLATILE):
                out |= leaves(value, f"{prefix}{key}.")
        return out
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return {prefix.rstrip("."): obj}
    return {}


def differences(expected: dict, actual: dict, rtol: float) -> list[tuple[str, object, object]]:
    rows = []
    for key in sorted(set(expected) | set(actual)):
        a, b = expected.get(key), actual.get(key)
        if a is None or b is None or not math.isclose(a, b, rel_tol=rtol, abs_tol=0.0):
            rows.append((key, a, b))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--update", action="store_true", help="rewrite repro/expected/ from this run")
    p.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0: exact, CPU)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="onecycle-repro-") as tmp:
        from onecycle.synthetic import image_folder

        images = str(Path(tmp) / "images")
        profile = (HERE / "params.yaml").read_text().replace("GENERATED", images)
        expected_params = (HERE / "expected" / "params.yaml")
        image_folder(Path(images), n_train=400, n_test=100)
        # First commit: the params the expected metrics were made with; then the profile as it is
        # now, so `dvc params diff` shows what a change did to the profile itself.
        baseline = expected_params.read_text().replace("GENERATED", images) if expected_params.is_file() else profile
        project = project_copy(Path(tmp) / "project", baseline)
        (project / "params.yaml").write_text(profile)
        params_diff = dvc("params", "diff", cwd=project, check=False).stdout
        print("running the pipeline on the repro profile (repro/params.yaml) ...", flush=True)
        dvc("repro", cwd=project)
        if args.update:
            for name in METRICS:
                shutil.copy2(project / name, HERE / "expected" / Path(name).name)
            shutil.copy2(HERE / "params.yaml", expected_params)
            print(f"updated {HERE / 'expected'}")
            return 0
        failed = False
        for name in METRICS:
            expected = leaves(json.loads((HERE / "expected" / Path(name).name).read_text()))
            actual = leaves(json.loads((project / name).read_text()))
            rows = differences(expected, actual, args.rtol)
            if rows:
                failed = True
                print(f"\n{name} differs from repro/expected/{Path(name).name} (rtol {args.rtol}):")
                print(f"{'Metric':45} {'Expected':>22} {'Actual':>22}")
                for key, a, b in rows:
                    print(f"{key:45} {a!s:>22} {b!s:>22}")
        print("\ndvc params diff (repro/expected/params.yaml -> repro/params.yaml):")
        print(params_diff or "(no change)")
        if failed:
            print("REPRODUCTION CHECK FAILED: metrics differ (see above). If the change is intended, "
                  "run `python repro/check.py --update` and commit repro/expected/.")
            return 1
        print(f"reproduction check passed: {len(METRICS)} metrics files equal repro/expected/ (rtol {args.rtol})")
        return 0


if __name__ == "__main__":
    sys.exit(main())
