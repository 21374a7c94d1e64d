#!/usr/bin/env bash
# One command for the whole test suite on a fresh machine: install the package with its test
# extras, bring up a local single-node SLURM where possible (root on Debian/Ubuntu; elsewhere
# the SLURM tests skip with a stated reason), then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[test]"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  bash slurm/local-slurm.sh start || echo "run-all: local SLURM unavailable; SLURM tests will skip"
fi
exec python3 -m pytest -q -p no:cacheprovider "$@"
