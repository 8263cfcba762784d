"""The package layout: no stage imports publishing (only the pipeline and the CLI do), and no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hf_taskgroup"
#: modules allowed to import hf_taskgroup.publishing: orchestration and the package root
MAY_PUBLISH = ("hf_taskgroup.pipeline", "hf_taskgroup.cli", "hf_taskgroup.commands", "hf_taskgroup.publishing")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, module: str, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{a.name}" for a in node.names}
    return {n for n in found if n.startswith("hf_taskgroup")}


def test_no_stage_imports_publishing():
    offenders = {}
    for name, path in _modules().items():
        if name == "hf_taskgroup" or name.startswith(MAY_PUBLISH):
            continue
        bad = sorted(i for i in _imports(path, name, top_level_only=False) if i.startswith("hf_taskgroup.publishing"))
        if bad:
            offenders[name] = bad
    assert not offenders, f"stages importing publishing (even inside functions): {offenders}"


def test_no_import_cycles_at_module_level():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        graph[name] = {i for i in _imports(path, name, top_level_only=True) if i in modules and i != name}
    seen, stack, cycles = set(), [], []

    def visit(node: str) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for dep in sorted(graph[node]):
            if not (node.startswith(dep + ".") or dep == "hf_taskgroup"):  # a package importing its children is fine
                visit(dep)
        stack.pop()

    for name in sorted(graph):
        visit(name)
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_the_trainer_renders_cards_through_the_registered_publishing_writer():
    import hf_taskgroup  # noqa: F401  (registers the writer)
    from hf_taskgroup.publishing.model_card import write_trainer_model_card
    from hf_taskgroup.training import trainer

    assert trainer._MODEL_CARD_WRITER is write_trainer_model_card
