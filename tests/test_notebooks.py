"""The notebooks execute, and the committed .ipynb files are their executed sources.

Each notebook states its conclusions as assertions on the numbers it computes,
so a change that breaks a claim fails here.
"""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("notebooks_run", ROOT / "notebooks" / "run.py")
run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)
SOURCES = run.sources()


def _code(nb):
  return [c.source.strip() for c in nb.cells if c.cell_type == "code"]


def _images(nb):
  return [
    o
    for c in nb.cells
    if c.cell_type == "code"
    for o in c.get("outputs", [])
    if "image/png" in o.get("data", {})
  ]


def test_notebooks_are_numbered_01_to_n():
  assert len(SOURCES) >= 7
  assert [p.name[:2] for p in SOURCES] == [f"{i:02d}" for i in range(1, len(SOURCES) + 1)]


@pytest.mark.slow
@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_notebook_executes(path):
  pytest.importorskip("nbclient")
  pytest.importorskip("jupytext")
  pytest.importorskip("matplotlib")
  nb = run.execute(path, timeout=300)
  assert _images(nb), f"{path.name} drew no plot"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_is_the_executed_source(path):
  jupytext = pytest.importorskip("jupytext")
  nbformat = pytest.importorskip("nbformat")
  ipynb = path.with_suffix(".ipynb")
  assert ipynb.exists(), f"{ipynb.name} is missing: run python notebooks/run.py {path.name[:2]}"
  committed = nbformat.read(ipynb, as_version=4)
  assert _code(committed) == _code(jupytext.read(path)), (
    f"{ipynb.name} is stale: run python notebooks/run.py {path.name[:2]}"
  )
  cells = [c for c in committed.cells if c.cell_type == "code"]
  assert all(c.execution_count for c in cells), f"{ipynb.name} has unexecuted cells"
  errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
  assert not errors, f"{ipynb.name} was committed with an error"
  assert _images(committed), f"{ipynb.name} was committed without its plots"
