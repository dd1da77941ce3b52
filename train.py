#!/usr/bin/env python
"""Train, resume, evaluate and compare agents on the benchmark envs; see ``python train.py --help``.

Thin on purpose: the logic lives in :mod:`agents.cli` (flags), :mod:`agents.runner` (one run) and
:mod:`agents.compare` (the multi-seed grid).
"""

import sys

from agents.cli import main

if __name__ == "__main__":
    sys.exit(main())
