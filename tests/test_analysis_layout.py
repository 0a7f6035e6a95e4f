"""zf_attr.analysis: one subpackage per study, no import circles, the public names of before still exported."""

from __future__ import annotations

import ast
from pathlib import Path

import zf_attr.analysis

PACKAGE = Path(zf_attr.analysis.__file__).parent
STUDIES = ("atlas", "comparison", "correspondence", "diagnostics", "evolution", "invariance", "occlusion")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every zf_attr.analysis module ``path`` imports: at the top, inside functions or under TYPE_CHECKING."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zf_attr.analysis"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("zf_attr.analysis"))
    return found


def test_no_import_circles_even_counting_lazy_and_typing_imports() -> None:
    graph = {module_name(path): imports(path) for path in PACKAGE.rglob("*.py")}
    packages = {name for name in graph if (PACKAGE.parent.parent / name.replace(".", "/") / "__init__.py").exists()}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [d for d in graph[start] if d not in packages]  # a package re-exports, it is not a study
        while todo:
            name = todo.pop()
            if name not in seen and name in graph:
                seen.add(name)
                todo.extend(d for d in graph[name] if d not in packages)
        return seen

    circles = [name for name in graph if name not in packages and name in reach(name)]
    assert circles == []


def test_one_subpackage_per_study_each_with_its_figure() -> None:
    for study in STUDIES:
        assert (PACKAGE / study / "__init__.py").is_file()
        assert (PACKAGE / study / "figure.py").is_file()
    flat = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "_features.py", "_probes.py", "comparison_methods.py", "tables.py"]


def test_the_public_names_of_before_are_still_exported() -> None:
    before = set(
        "ALL_METRICS KNOWN_METHODS Atlas Comparison EvolutionSnapshot FeatureEvolution OcclusionStudy SummaryTable "
        "TopKActivations centre_prior compare mine_top_k occlusion_study plot_atlas project_feature_map "
        "project_top_k random_map save_atlas".split()
    )
    assert before <= set(zf_attr.analysis.__all__)
    assert all(hasattr(zf_attr.analysis, name) for name in zf_attr.analysis.__all__)
    from zf_attr.analysis.comparison_methods import KNOWN_METHODS  # the former module path still works

    assert KNOWN_METHODS is zf_attr.analysis.KNOWN_METHODS
