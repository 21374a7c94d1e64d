"""Benchmarks import the test oracles (tests/naive.py) as baselines."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
