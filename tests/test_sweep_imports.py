"""The modules of alignlab.sweep import each other without a circle (function-level imports included)."""
import ast
from pathlib import Path

import pytest

SWEEP = Path(__file__).resolve().parent.parent / "alignlab" / "sweep"
MODULES = sorted(p.stem for p in SWEEP.glob("*.py"))
PACKAGE = "alignlab.sweep"


def sweep_imports(module: str) -> set[str]:
    """The alignlab.sweep modules `module` imports anywhere in its source ("__init__" for the package itself)."""
    out = set()
    for node in ast.walk(ast.parse((SWEEP / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == PACKAGE:  # from alignlab.sweep import x: the submodule x, or a name of __init__
                out.update(a.name if a.name in MODULES else "__init__" for a in node.names)
            elif node.module.startswith(PACKAGE + "."):
                out.add(node.module.split(".")[2])
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"alignlab/sweep/{module}.py: use absolute imports")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE:
                    out.add("__init__")
                elif alias.name.startswith(PACKAGE + "."):
                    out.add(alias.name.split(".")[2])
    out.discard(module)
    return out


GRAPH = {m: sweep_imports(m) for m in MODULES}


@pytest.mark.parametrize("module", MODULES)
def test_no_module_is_imported_back(module):
    """Nothing that `module` reaches through its imports imports `module` again."""
    seen, todo = set(), list(GRAPH[module])
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        assert current != module, f"alignlab/sweep/{module}.py is imported back: {GRAPH}"
        seen.add(current)
        todo.extend(GRAPH[current])


def test_the_expected_edges():
    assert GRAPH["report"] == {"collect", "pareto", "plots", "wandb_summary"}
    assert GRAPH["wandb_summary"] == {"collect"} and GRAPH["plots"] == {"pareto"}
    assert GRAPH["collect"] == set() and GRAPH["pareto"] == set()
    assert all("__init__" not in GRAPH[m] for m in MODULES)


def test_public_names_stay_importable():
    import alignlab.sweep as sweep
    from alignlab.sweep.collect import sweep_name
    from alignlab.sweep.report import report, sweep_name as report_sweep_name

    assert report_sweep_name is sweep_name and sweep.report is report and callable(sweep.collect)
    assert sweep_name("/x/multirun/2026-11-23/16-25-29") == "2026-11-23/16-25-29"
