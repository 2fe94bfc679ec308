#!/usr/bin/env python3
"""Fails when two or more modules of one crate import each other in a loop.

A module's imports are the paths it names: `crate::a::b`, `super::x`, and a module file's
own children (`child::item`, `self::child`). Test modules (`#[cfg(test)] mod tests { … }`
and files named `tests.rs`), comments and doc links are left out: tests may reach anywhere,
and a doc link is not a dependency. Each loop is printed as the modules it joins, e.g.

    coordinator: channels -> fleet -> channels

    scripts/module-cycles.py [ROOT]     (default: the repository root)
"""

import os
import re
import sys
from collections import defaultdict

SKIPPED_DIRS = {"target", ".git", ".run", "tests", "benches", "examples"}
PATH = re.compile(r"\b(crate|super)((?:::\w+)+)")
LOCAL = re.compile(r"(?<![:\w])(?:self::)?(\w+)::")
BRACED_USE = re.compile(r"\b(crate|super)::\{([^;]*)\};", re.S)
TEST_MODULE = re.compile(r"#\[cfg\(test\)\]\s*mod \w+\s*\{")
COMMENT = re.compile(r"//[^\n]*")


def crates(root):
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [name for name in subdirs if name not in SKIPPED_DIRS]
        if "Cargo.toml" in files and os.path.isdir(os.path.join(directory, "src")):
            yield directory, os.path.join(directory, "src")


def modules(src):
    """Module path (a tuple) → file, for every module file of a crate's `src`."""
    found = {}
    for directory, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs") or name == "tests.rs":
                continue
            path = os.path.join(directory, name)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[0] == "bin":
                continue
            if parts[-1] in ("lib", "main", "mod"):
                parts = parts[:-1]
            found[tuple(parts)] = path
    return found


def source_without_tests_and_comments(path):
    with open(path, encoding="utf-8") as file:
        text = file.read()
    test_module = TEST_MODULE.search(text)
    if test_module:
        text = text[: test_module.start()]
    return COMMENT.sub("", text)


def imports(module, path, known):
    text = source_without_tests_and_comments(path)
    found = set()

    def resolve(parts):
        for length in range(len(parts), 0, -1):
            if tuple(parts[:length]) in known:
                found.add(tuple(parts[:length]))
                return

    for match in PATH.finditer(text):
        parts = match.group(2).strip(":").split("::")
        base = [] if match.group(1) == "crate" else list(module[:-1])
        resolve(base + parts)
    for match in BRACED_USE.finditer(text):
        base = [] if match.group(1) == "crate" else list(module[:-1])
        for item in match.group(2).split(","):
            resolve(base + item.strip().split("::"))
    for match in LOCAL.finditer(text):
        child = module + (match.group(1),)
        if child in known:
            found.add(child)
    found.discard(module)
    found.discard(())
    return found


def loops(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    sys.setrecursionlimit(10_000)
    for node in list(edges):
        if node not in index:
            visit(node)
    return components


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    found = 0
    for crate, src in sorted(crates(root)):
        known = modules(src)
        edges = defaultdict(set)
        for module, path in known.items():
            edges[module] = imports(module, path, known)
        for component in loops(edges):
            found += 1
            names = " <-> ".join("::".join(module) or "(root)" for module in component)
            print(f"{os.path.relpath(crate, root)}: {names}")
    if found:
        print(f"{found} import loop(s); move what both sides need into a module of its own", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
