"""The package's layout, read from the source with ``ast`` (nothing is imported): imports point down the data
flow and form no cycles, the per-command config objects are used only at the edge (commands, cli, api), the
top level stays small, and the README's code map names exactly the modules that exist."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "florence_tune"
SOURCE = REPO / "src" / PACKAGE

# Level of a module, by its first component after ``florence_tune.``; "" is the package's own __init__, which
# holds only the version (so ``from florence_tune import distributed`` is no import from the top).
LAYERS = {
    "": 0, "errors": 0, "paths": 0, "distributed": 0, "hub": 0, "tasks": 0, "config": 0,
    "data": 1,
    "batch": 2,
    "model": 3,
    "evaluation": 4,
    "training": 5,
    "reporting": 6,
    "bench": 7,
    "commands": 8,
    "cli": 9, "api": 9, "__main__": 9,
}
# The one import that points up: the package's __init__ hands out the API (florence_tune.train, .load...) from a
# module __getattr__, on first use. It is left out of the layer and cycle checks, and allowed nowhere else.
LAZY_FACE = (PACKAGE, f"{PACKAGE}.api")
CONFIG_READERS = (f"{PACKAGE}.commands", f"{PACKAGE}.cli", f"{PACKAGE}.api", f"{PACKAGE}.config")
MAX_TOP_LEVEL_MODULES = 12


def package_modules() -> dict[str, Path]:
    """Dotted module name → file, for every .py file of the package (a package is named by its __init__)."""
    modules = {}
    for path in sorted(SOURCE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        name = ".".join(path.relative_to(SOURCE.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def imported_names(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names an import statement mentions: ``from a.b import c`` mentions ``a.b`` and ``a.b.c``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".")
        if path.name != "__init__.py":
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    return [source] + [f"{source}.{alias.name}" for alias in node.names]


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package, or None for outside imports."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_edges(modules: dict[str, Path]) -> list[tuple[str, int, str]]:
    """(importer, line, imported) for every import of a package module, inside functions too; no self-edges."""
    edges = set()
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for name in imported_names(module, path, node):
                    target = resolve(name, modules)
                    if target and target != module and (module, target) != LAZY_FACE:
                        edges.add((module, node.lineno, target))
    return sorted(edges)


def layer(module: str) -> str:
    """The first component after ``florence_tune.``; "" for the package itself."""
    return module.removeprefix(PACKAGE).lstrip(".").split(".")[0]


def layer_label(module: str) -> str:
    return layer(module) or PACKAGE


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the strongly connected components with more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)

    for root in sorted(graph):
        if root in index:
            continue
        visit(root)
        work = [(root, iter(sorted(graph[root])))]
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    visit(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def test_imports_point_down_the_data_flow():
    modules = package_modules()
    problems = [
        f"{relative(path)}: {module} is in no layer (add it to a layer)"
        for module, path in modules.items()
        if layer(module) not in LAYERS
    ]
    for importer, line, imported in import_edges(modules):
        if layer(importer) not in LAYERS or layer(imported) not in LAYERS:
            continue
        importer_level, imported_level = LAYERS[layer(importer)], LAYERS[layer(imported)]
        if imported_level > importer_level:
            problems.append(
                f"{relative(modules[importer])}:{line} imports {imported} ({layer_label(imported)}, level "
                f"{imported_level}) from {layer_label(importer)} (level {importer_level})"
            )
    assert not problems, "imports against the data flow:\n" + "\n".join(problems)


def test_no_import_cycles():
    modules = package_modules()
    edges = import_edges(modules)
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for importer, _, imported in edges:
        graph[importer].add(imported)
    problems = []
    for component in strongly_connected(graph):
        members = set(component)
        problems.append("cycle: " + " <-> ".join(component))
        problems.extend(
            f"    {relative(modules[importer])}:{line} imports {imported}"
            for importer, line, imported in edges
            if importer in members and imported in members
        )
    assert not problems, "import cycles:\n" + "\n".join(problems)


def config_classes() -> set[str]:
    tree = ast.parse((SOURCE / "config.py").read_text())
    return {node.name for node in tree.body if isinstance(node, ast.ClassDef) and node.name.endswith("Config")}


def reads_configs(module: str) -> bool:
    return any(module == allowed or module.startswith(allowed + ".") for allowed in CONFIG_READERS)


def test_config_objects_are_read_only_by_commands():
    modules = package_modules()
    classes = config_classes()
    assert classes, "src/florence_tune/config.py defines no *Config class"
    config_module = f"{PACKAGE}.config"
    problems = []
    for module, path in modules.items():
        if reads_configs(module):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                source = resolve(imported_names(module, path, node)[0], modules)
                for alias in node.names:
                    if source == config_module and (alias.name in classes or alias.name == "*"):
                        problems.append(f"{relative(path)}:{node.lineno} imports {alias.name} from {config_module}")
            elif isinstance(node, ast.Attribute) and node.attr in classes:
                problems.append(f"{relative(path)}:{node.lineno} uses .{node.attr}")
    assert not problems, (
        "config objects outside commands/, cli, api (pass plain values or settings instead):\n" + "\n".join(problems)
    )


def test_top_level_stays_small():
    top_level = sorted(p.name for p in SOURCE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(top_level) <= MAX_TOP_LEVEL_MODULES, (
        f"{len(top_level)} modules at the top of src/{PACKAGE} (at most {MAX_TOP_LEVEL_MODULES}): "
        + ", ".join(top_level)
    )


def code_map_block() -> list[str]:
    """The lines of the first fenced code block under the README's ``## Code map`` heading."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Code map"), None)
    assert start is not None, "README.md has no '## Code map' section"
    section = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        section.append(line)
    fences = [i for i, line in enumerate(section) if line.lstrip().startswith("```")]
    assert len(fences) >= 2, "the README's '## Code map' section has no fenced code block"
    return section[fences[0] + 1: fences[1]]


def code_map_entries(block: list[str]) -> list[str]:
    """Repository-relative paths named by the code map (folders end in "/").

    Format: one entry per line, its first token a ``name.py`` or ``name/``; an entry belongs to the nearest
    ``folder/`` line above it that is indented less. Lines indented 0 are repository-root paths, the first
    being ``src/florence_tune/``. Other lines (descriptions, continuations) are ignored.
    """
    entries = []
    folders: list[tuple[int, str]] = []  # (indentation, repository-relative folder path ending in "/")
    for raw in block:
        line = raw.expandtabs(4)
        tokens = line.split()
        if not tokens or not tokens[0].endswith((".py", "/")):
            continue
        indent = len(line) - len(line.lstrip())
        while folders and folders[-1][0] >= indent:
            folders.pop()
        path = (folders[-1][1] if folders else "") + tokens[0]
        entries.append(path)
        if path.endswith("/"):
            folders.append((indent, path))
    return entries


def package_tree() -> set[str]:
    """Repository-relative module files and package folders (folders holding .py files) under the package."""
    tree = set()
    for path in SOURCE.rglob("*"):
        parts = path.relative_to(SOURCE).parts
        if "__pycache__" in parts:
            continue
        if path.is_file() and path.suffix == ".py" and path.name not in ("__init__.py", "__main__.py"):
            tree.add(relative(path))
        elif path.is_dir() and any("__pycache__" not in p.parts for p in path.rglob("*.py")):
            tree.add(relative(path) + "/")
    return tree


def test_readme_code_map_matches_the_tree():
    """README.md's ``## Code map`` names every module and package folder, and names nothing that is gone.

    The fenced block is an indented tree, one ``name.py`` / ``name/`` per line as its first token, children
    indented deeper than their ``folder/`` line; indentation 0 is the repository root (``src/florence_tune/``,
    ``train.py``, ``tests/`` ...). Text after the first token is free description."""
    entries = code_map_entries(code_map_block())
    prefix = f"src/{PACKAGE}/"
    assert prefix in entries, f"the code map does not start from {prefix}"
    missing = sorted(package_tree() - set(entries))
    gone = sorted(entry for entry in entries if not (REPO / entry).exists())
    problems = [f"not in the code map: {path}" for path in missing] + [f"in the code map, no such path: {path}"
                                                                         for path in gone]
    assert not problems, "README.md '## Code map' vs the tree:\n" + "\n".join(problems)
