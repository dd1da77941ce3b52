#!/usr/bin/env python
"""Train, resume, evaluate and compare agents on the benchmark envs; see ``python train.py --help``.

Thin on purpose: the logic lives in :mod:`agents.cli` (flags), :mod:`agents.session` (one run) and
:mod:`agents.compare` (the multi-seed grid).
"""

import sys
from pathlib import Path

# `agents` and `envs` are folders of this repository, not installed packages (generic names that
# would collide in site-packages): put the repository first on the path, whatever the current
# directory or PYTHONSAFEPATH.
ROOT = str(Path(__file__).resolve().parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from agents.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
