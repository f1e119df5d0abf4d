"""The README's Python examples run as written (so the README stays true)."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run():
  text = README.read_text()
  blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
  assert blocks, "no python examples found in README.md"
  namespace: dict = {}
  for block in blocks:
    exec(compile(block, str(README), "exec"), namespace)
