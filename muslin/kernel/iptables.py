"""iptables as transactions: every change is one ``iptables-restore --noflush`` batch.

Callers build the batch as text (easy to read in tests and logs) and hand it here. The kernel applies
a batch all or nothing, so a failed step never leaves half a rule set. Rules act on the network
namespace of the calling thread's process (subprocesses inherit the caller's namespace).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

TABLES = ("filter", "nat", "mangle", "raw")


class IptablesError(RuntimeError):
    pass


def available() -> bool:
    """Whether the iptables tools are installed (the nftables backend runs without them)."""
    return _find("iptables-save") is not None


def _find(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _binary(name: str) -> str:
    found = _find(name)
    if not found:
        raise IptablesError(f"{name} not found: install the iptables package")
    return found


def restore(batch: str) -> None:
    """Apply a complete iptables-restore text (with ``*table`` and ``COMMIT`` lines) atomically."""
    if not batch.strip():
        return
    proc = subprocess.run(
        [_binary("iptables-restore"), "--noflush", "--wait"],
        input=batch, text=True, capture_output=True,
    )
    if proc.returncode != 0:
        raise IptablesError(f"iptables-restore failed: {proc.stderr.strip()}\n--- batch ---\n{batch}")


def save(table: str) -> str:
    proc = subprocess.run([_binary("iptables-save"), "-t", table], text=True, capture_output=True)
    if proc.returncode != 0:
        raise IptablesError(f"iptables-save -t {table} failed: {proc.stderr.strip()}")
    return proc.stdout


def chain_rules(table: str, chain: str) -> list[str]:
    """The rules of one chain (``-A CHAIN ...`` lines, as iptables-save prints them); none when the
    chain does not exist. One chain is read, not the table: a check of a few rules of a built-in chain
    costs the same beside a thousand containers' rules."""
    proc = subprocess.run([_binary("iptables"), "-w", "-t", table, "-S", chain], text=True, capture_output=True)
    if proc.returncode != 0:
        if "No chain/target/match by that name" in proc.stderr:
            return []
        raise IptablesError(f"iptables -t {table} -S {chain} failed: {proc.stderr.strip()}")
    return [line for line in proc.stdout.splitlines() if line.startswith("-A ")]


def builtin_chain(table: str, chain: str) -> tuple[str, list[str]]:
    """A built-in chain's policy (``ACCEPT``, ``DROP``) and rules (``-A`` lines), one chain read. Listing
    creates nothing: where the table does not exist, the policy is ACCEPT and there are no rules."""
    proc = subprocess.run([_binary("iptables"), "-w", "-t", table, "-S", chain], text=True, capture_output=True)
    if proc.returncode != 0:
        raise IptablesError(f"iptables -t {table} -S {chain} failed: {proc.stderr.strip()}")
    lines = proc.stdout.splitlines()
    policy = next((line.split()[2] for line in lines if line.startswith(f"-P {chain} ")), "ACCEPT")
    return policy, [line for line in lines if line.startswith("-A ")]


@dataclass
class Ruleset:
    """What one table holds: chain names and rule specs (``-A CHAIN ...`` lines, as iptables-save prints)."""

    chains: set[str] = field(default_factory=set)
    rules: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set, repr=False, compare=False)

    def has(self, rule: str) -> bool:
        return normalize(rule) in self._normalized()

    def add(self, rule: str) -> None:
        self.rules.append(rule)
        self._normalized().add(normalize(rule))

    def _normalized(self) -> set[str]:
        if len(self._seen) != len(self.rules):
            self._seen = {normalize(r) for r in self.rules}
        return self._seen

    def rules_in(self, chain: str) -> list[str]:
        prefix = f"-A {chain} "
        return [r for r in self.rules if r.startswith(prefix)]


def read(table: str) -> Ruleset:
    return read_all(save(table)).get(table, Ruleset())


def read_all(text: str | None = None) -> dict[str, Ruleset]:
    """Every table in one iptables-save run (one process instead of one per table)."""
    if text is None:
        proc = subprocess.run([_binary("iptables-save")], text=True, capture_output=True)
        if proc.returncode != 0:
            raise IptablesError(f"iptables-save failed: {proc.stderr.strip()}")
        text = proc.stdout
    tables: dict[str, Ruleset] = {}
    current = Ruleset()
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:].strip(), Ruleset())
        elif line.startswith(":"):
            current.chains.add(line[1:].split()[0])
        elif line.startswith("-A "):
            current.rules.append(line)
    return tables


def normalize(rule: str) -> str:
    return " ".join(rule.split())


class Batch:
    """Collects lines per table and renders one restore text."""

    def __init__(self) -> None:
        self._lines: dict[str, list[str]] = {}

    def add(self, table: str, line: str) -> None:
        self._lines.setdefault(table, []).append(line)

    def render(self) -> str:
        out: list[str] = []
        for table in TABLES:
            lines = self._lines.get(table)
            if not lines:
                continue
            # Chain declarations must precede the rules that use them.
            decls = [line for line in lines if line.startswith(":")]
            out.append(f"*{table}")
            out.extend(decls)
            out.extend(line for line in lines if not line.startswith(":"))
            out.append("COMMIT")
        return "\n".join(out) + "\n" if out else ""

    def tables(self) -> list[str]:
        """The tables the batch changes: iptables-restore commits each in a transaction of its own."""
        return [table for table in TABLES if self._lines.get(table)]

    def apply(self) -> None:
        restore(self.render())

    def __bool__(self) -> bool:
        return any(self._lines.values())
