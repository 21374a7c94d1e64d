"""Shared test fixtures; puts tests/ on sys.path so ``import naive`` finds the oracles."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
