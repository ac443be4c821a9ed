"""The library's shape (issue: one home per concept): its modules import each other without a cycle."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "otca_lib"


def imports_of(path: Path) -> set[str]:
    """The otca_lib modules a file imports anywhere (module level, inside functions, under __main__)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:   # from .x import y / from . import x
                found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif node.module and node.module.startswith("otca_lib"):
                rest = node.module.split(".")[1:]
                found |= {rest[0]} if rest else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("otca_lib.")}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {m: imports_of(p) & set(modules) - {m} for m, p in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle [a, b, ..., a] of the graph, or None (depth-first search with colours)."""
    colour, stack = dict.fromkeys(graph, 0), []

    def visit(m):
        colour[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if colour[n] == 1:
                return stack[stack.index(n):] + [n]
            if colour[n] == 0 and (cycle := visit(n)):
                return cycle
        colour[m] = 2
        stack.pop()
        return None

    for m in sorted(graph):
        if colour[m] == 0 and (cycle := visit(m)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_library_imports_without_a_cycle():
    graph = import_graph()
    assert graph["train"] >= {"sample", "update"}  # the graph is read (a parser that finds nothing passes anything)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def long_functions(limit: int = 60) -> list[str]:
    """Functions of the library longer than `limit` lines, command-line mains (argument parsers) excepted."""
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "main":
                if node.end_lineno - node.lineno + 1 > limit:
                    found.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    return found


def test_no_function_reads_longer_than_a_screen():
    assert not long_functions(), "split these into named parts: " + ", ".join(long_functions())
    assert long_functions(limit=20)  # the measurement sees functions at all
