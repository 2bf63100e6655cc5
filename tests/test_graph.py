"""The module graph of ``lcgan``: no import circle, and a command-line module is a leaf (libraries never import one)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lcgan"
# library -> command imports still to be split; each entry names who removes it
KNOWN: set[tuple[str, str]] = set()


def imports() -> dict[str, set[str]]:
    """lcgan module -> the lcgan modules it imports (at any depth of its code, lazy imports included)."""
    found = {}
    for path in PACKAGE.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "lcgan":
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lcgan."):
                names.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("lcgan.")}
        found[path.stem] = {n for n in names if (PACKAGE / f"{n}.py").is_file() and n != path.stem}
    return found


def commands() -> set[str]:
    return {p.stem for p in PACKAGE.glob("*.py") if 'if __name__ == "__main__":' in p.read_text()}


def test_no_import_circle():
    graph, state, circles = imports(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, f"import circles: {circles}"


def test_command_modules_are_leaves():
    graph, cli = imports(), commands()
    assert {"evaluate", "translate", "fid_stats", "encode", "latent_stats", "report"} <= cli
    used = sorted((lib, cmd) for lib, deps in graph.items() for cmd in deps & cli if (lib, cmd) not in KNOWN)
    assert not used, f"modules importing a command-line module (move the shared code into a library): {used}"
