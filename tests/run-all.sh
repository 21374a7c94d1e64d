#!/usr/bin/env bash
# One command for the whole test suite on a fresh machine: install the package with its test
# extras, bring up a local single-node SLURM where possible (root on Debian/Ubuntu), then run
# pytest.  Elsewhere the SLURM tests skip with a stated reason, except in CI (CI=true): there a
# SLURM that does not come up fails the run at once, and tests/test_slurm.py fails rather than
# skips, so a green CI run has always run the SLURM tests.
set -euo pipefail
cd "$(dirname "$0")/.."
in_ci() { [[ ${CI:-} =~ ^([Tt][Rr][Uu][Ee]|1)$ ]]; }
python3 -m pip install -q -e ".[test]"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if ! bash slurm/local-slurm.sh start; then
    if in_ci; then
      echo "run-all: ERROR: the local SLURM did not come up (see above); in CI the SLURM tests" \
        "must run: fix the bring-up (bash slurm/local-slurm.sh start)" >&2
      exit 1
    fi
    echo "run-all: local SLURM unavailable; SLURM tests will skip (in CI they fail)" >&2
  fi
elif in_ci; then
  echo "run-all: ERROR: CI needs root and apt-get to bring up the local SLURM" \
    "(slurm/local-slurm.sh); without it the SLURM tests cannot run" >&2
  exit 1
fi
exec python3 -m pytest -q -p no:cacheprovider "$@"
