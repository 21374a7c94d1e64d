#!/usr/bin/env bash
# One command for the whole test suite on a fresh machine: install the package with its test
# extras, bring up a local single-node SLURM where possible (root on Debian/Ubuntu), then run
# pytest.  Elsewhere the SLURM tests skip with a stated reason, except in CI (CI=true): there a
# SLURM that does not come up fails the run at once, and tests/test_slurm.py fails rather than
# skips, so a green CI run has always run the SLURM tests.
# A SLURM that this script started is stopped again when it ends (however it ends); one that
# was already running is left running, and so is every one with KEEP_LOCAL_SLURM=1.
set -euo pipefail
cd "$(dirname "$0")/.."
in_ci() { [[ ${CI:-} =~ ^([Tt][Rr][Uu][Ee]|1)$ ]]; }
python3 -m pip install -q -e ".[test]"
stop_slurm() { bash slurm/local-slurm.sh stop >&2 || true; }
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  was_up=0
  bash slurm/local-slurm.sh status >/dev/null 2>&1 && was_up=1
  if bash slurm/local-slurm.sh start; then
    if [ "$was_up" = 0 ] && [ -z "${KEEP_LOCAL_SLURM:-}" ]; then
      trap stop_slurm EXIT
    fi
  else
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
# pytest-xdist: FASTNTK_TEST_WORKERS processes (default 2, CI's cores), one test file each at a
# time (--dist loadfile: module fixtures built once); FASTNTK_TEST_WORKERS=0 runs in this process
python3 -m pytest -q -p no:cacheprovider -n "${FASTNTK_TEST_WORKERS:-2}" --dist loadfile "$@"
# (not exec: the EXIT trap runs afterwards)
