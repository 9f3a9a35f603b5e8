"""Checks the layout rules of src/: no import circle between top-level
modules, at most 6 files directly in src/, no file over 400 lines.
Prints the module graph. Exits non-zero on a violation."""

import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
# Paths that name a top-level module: `crate::x`, and inside `use crate::{...}`
# the first segment of each path.
USE_BLOCK = re.compile(r"use\s+crate::\{(.*?)\};", re.S)
CRATE_PATH = re.compile(r"crate::([a-z_]+)")
# Re-exports at the crate root (`crate::Worker`) belong to the module that
# defines them; lib.rs says which.
ROOT_REEXPORT = re.compile(r"pub use (\w+)::")


def top(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def root_items() -> dict:
    """Item name -> module, for the crate root's re-exports."""
    lib = (SRC / "lib.rs").read_text()
    items = {}
    for block in re.finditer(r"pub use (\w+)::(\{.*?\}|\w+);", lib, re.S):
        module, names = block.group(1), block.group(2)
        for name in re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\b", names):
            items[name] = module
    return items


def depends(text: str, items: dict, modules: set) -> set:
    # Doc links and comments name modules without importing them.
    text = re.sub(r"//.*", "", text)
    found = set()
    for block in USE_BLOCK.finditer(text):
        depth, seg, segments = 0, "", []
        for ch in block.group(1):
            if ch == "{":
                if depth == 0:
                    segments.append(seg)
                depth += 1
            elif ch == "}":
                depth -= 1
                seg = ""
            elif ch == "," and depth == 0:
                segments.append(seg)
                seg = ""
            elif depth == 0:
                seg += ch
        segments.append(seg)
        for s in segments:
            name = s.strip().split("::")[0].strip()
            if name:
                found.add(name)
    found.update(CRATE_PATH.findall(USE_BLOCK.sub("", text)))
    out = set()
    for name in found:
        if name in modules:
            out.add(name)
        elif name in items:
            out.add(items[name])
    return out


def main() -> int:
    failures = []
    files = sorted(SRC.rglob("*.rs"))
    modules = {top(f) for f in files} - {"lib", "main"}
    items = root_items()
    graph = {m: set() for m in modules}
    for f in files:
        m = top(f)
        lines = f.read_text().count("\n")
        if lines > 400:
            failures.append(f"{f.relative_to(SRC.parent)} has {lines} lines (over 400)")
        if m in ("lib", "main"):
            continue
        graph[m] |= depends(f.read_text(), items, modules) - {m}
    direct = [f for f in SRC.iterdir() if f.is_file()]
    if len(direct) > 6:
        failures.append(f"{len(direct)} files directly in src/ (at most 6)")
    for m in sorted(graph):
        print(f"{m:>10} -> {', '.join(sorted(graph[m])) or '-'}")
    # A cycle: a module that reaches itself.
    for start in sorted(graph):
        seen, stack = set(), [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    failures.append("import circle: " + " -> ".join(path + [start]))
                    stack = []
                    break
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    for f in failures:
        print(f"FAIL {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
