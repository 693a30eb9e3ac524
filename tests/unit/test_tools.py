"""Every external command the code, tests and benchmarks run is in ``tools``, the list setup.sh installs
from: a fresh machine set up by setup.sh has all of them.

The scan reads the sources' syntax trees: the first element of every command list handed to
subprocess/os.exec*, the command after ``nsenter --net=...``, the names given to ``shutil.which`` and
to the iptables binary lookup, and the command given to our own runners (functions taking ``*cmd``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from ..tools import listed

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("muslin", "tests", "bench")
OUR_OWN = {"muslind", "muslin", "muslin-flanneld"}  # console scripts of this package, not system tools
SPAWNERS = {"run", "Popen", "check_output", "check_call", "call", "create_subprocess_exec",
            "execvp", "execvpe", "execv", "execve"}
LOOKUPS = {"which", "_binary", "bin_path", "require"}


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _literal(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _after_nsenter(items: list[ast.expr]) -> Iterator[str]:
    """``nsenter --net=X cmd ...``: the command is the first literal after nsenter's own options."""
    for i, item in enumerate(items):
        if _literal(item) != "nsenter":
            continue
        for following in items[i + 1:]:
            if isinstance(following, ast.JoinedStr) or (_literal(following) or "").startswith("-"):
                continue  # nsenter's options (--net=..., -t PID, ...)
            if (text := _literal(following)) is not None:
                yield text
            break


def _runners(trees: list[ast.Module]) -> dict[str, int]:
    """Our functions that run a command given as ``*cmd``: name -> positional index of the command."""
    found: dict[str, int] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.args.vararg \
                    and node.args.vararg.arg == "cmd":
                params = [a.arg for a in node.args.args if a.arg != "self"]
                found[node.name] = len(params)
    return found


def commands_in(trees: list[ast.Module]) -> set[str]:
    runners = _runners(trees)
    commands: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.List, ast.Tuple)):
                commands.update(_after_nsenter(node.elts))
            if not isinstance(node, ast.Call):
                continue
            name = _name(node.func)
            if name in SPAWNERS and node.args and isinstance(node.args[0], (ast.List, ast.Tuple)) \
                    and node.args[0].elts and (first := _literal(node.args[0].elts[0])) is not None:
                commands.add(first)
            if name in SPAWNERS and node.args and (first := _literal(node.args[0])) is not None \
                    and name.startswith("exec"):
                commands.add(first)
            if name in LOOKUPS and node.args and (looked := _literal(node.args[0])) is not None:
                commands.add(looked)
            if name in runners and len(node.args) > runners[name] \
                    and not (cmd := _literal(node.args[runners[name]]) or "-").startswith("-"):
                commands.add(cmd)  # (an option there means a namesake that is not a runner)
                commands.update(_after_nsenter(node.args))
    return commands


def _trees() -> list[ast.Module]:
    return [ast.parse(path.read_text(), str(path)) for top in SCANNED for path in sorted((REPO / top).rglob("*.py"))]


def test_every_command_the_code_runs_is_in_the_tools_list() -> None:
    commands = commands_in(_trees())
    assert {"nft", "docker", "etcdctl", "iperf3", "runc", "nsenter"} <= commands  # the scan sees them
    missing = sorted(commands - set(listed()) - OUR_OWN)
    assert not missing, f"add these to {REPO / 'tools'} with their Debian package: {missing}"


def test_the_scan_finds_commands_in_each_form_it_knows() -> None:
    source = '''
def run(node, *cmd): ...
subprocess.run(["alpha", "-x"])
subprocess.Popen(["nsenter", f"--net={p}", "beta", "y"])
shutil.which("gamma")
lab.run(node, "delta", "z")
os.execvp("epsilon", argv)
subprocess.run([sys.executable, "-c", "print()"])
'''
    assert commands_in([ast.parse(source)]) == {"alpha", "nsenter", "beta", "gamma", "delta", "epsilon"}


def test_setup_installs_from_the_same_list() -> None:
    setup = (REPO / "setup.sh").read_text()
    assert "done < tools" in setup
    assert all(package.replace("-", "").replace(".", "").isalnum() for package in listed().values())
