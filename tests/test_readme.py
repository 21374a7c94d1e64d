"""The README's Python examples run as written (a README that lies is a bug)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_examples_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no Python examples"
    script = tmp_path / "readme_examples.py"
    script.write_text("\n".join(blocks))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [ln for ln in first_block.splitlines() if ln and not ln.startswith("#")]
    assert commands == ["python3 -m pip install -e . && fastntk spectrum",
                        "bash tests/run-all.sh"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash tests/run-all.sh" in ci
