#!/usr/bin/env bash
# Wheels that the lent GPU machine's image lacks (it has torch, numpy, scipy, opencv, pillow,
# pyyaml, tqdm and matplotlib, but not albumentations and pydantic), for Python 3.12 x86_64, into
# .whl/ (git-ignored); benchmarks/gpu.sh installs them there with --no-index.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
for pkg in albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 pydantic-core==2.50.5 \
           annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 \
           stringzilla==5.3.2 simsimd==6.5.16; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pkg"
done
ls .whl
