"""The house rules that keep tmsjax two wings: the generic engine never imports the TMS wing, and no
module hides an import inside a function to dodge one. Also: a user's own model never loads the
TMS."""

import ast
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tmsjax"
WING = PACKAGE / "tms"


def _imports(tree: ast.AST):
    """(module name, line, at module level) of every import in a parsed file, relative ones resolved
    to absolute names by the caller."""
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(
                    f"relative import at line {node.lineno}: use absolute tmsjax imports"
                )
            module = node.module or ""
            # `from tmsjax import tms` imports the module tmsjax.tms.
            for alias in node.names:
                yield f"{module}.{alias.name}", node.lineno, id(node) in top
            yield module, node.lineno, id(node) in top


def _package_files():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20, "the package was not found"
    return files


def test_generic_engine_never_imports_the_tms_wing():
    offenders = []
    for path in _package_files():
        if WING in path.parents:
            continue
        for name, line, _ in _imports(ast.parse(path.read_text())):
            if name == "tmsjax.tms" or name.startswith("tmsjax.tms."):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_no_tmsjax_import_is_hidden_inside_a_function():
    offenders = []
    for path in sorted(
        [
            *_package_files(),
            *(ROOT / "experiments").glob("*.py"),
            *(ROOT / "benchmarks").glob("*.py"),
        ]
    ):
        for name, line, at_top in _imports(ast.parse(path.read_text())):
            if not at_top and (
                name == "tmsjax" or name.startswith("tmsjax.") or name.startswith("experiments")
            ):
                offenders.append(
                    f"{path.relative_to(ROOT)}:{line} imports {name} inside a function"
                )
    assert not offenders, "\n".join(sorted(set(offenders)))


def test_the_walker_sees_both_kinds_of_offence():
    source = "from tmsjax import tms\n\ndef f():\n    import tmsjax.llc\n"
    found = list(_imports(ast.parse(source)))
    assert ("tmsjax.tms", 1, True) in found
    assert ("tmsjax.llc", 4, False) in found


def _readme_block(heading: str) -> str:
    """The first ```python block after `heading` in README.md."""
    text = (ROOT / "README.md").read_text()
    start = text.index(heading)
    match = re.search(r"```python\n(.*?)```", text[start:], flags=re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


@pytest.mark.parametrize("heading", ["## λ̂ for your own JAX model"])
def test_readme_llc_example_runs_without_loading_the_tms_wing(heading):
    code = _readme_block(heading)
    check = textwrap.dedent(
        """
        import sys
        loaded = sorted(m for m in sys.modules if m == "tmsjax.tms" or m.startswith("tmsjax.tms."))
        assert not loaded, loaded
        print("NO_TMS_LOADED")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code + check], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NO_TMS_LOADED" in result.stdout
