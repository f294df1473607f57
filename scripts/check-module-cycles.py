#!/usr/bin/env python3
"""Fails when modules of a workspace crate import each other in a circle.

Each file is a module (`src/a.rs` and `src/a/mod.rs` are `a`, `src/a/b.rs`
is `a::b`; lib.rs or main.rs is the root). An edge A -> B is any path
`crate::b...`, `super::...` or `self::...` written in A that names module B
(the longest module prefix of the path). The root is a node like any other:
besides those paths, a bare `b::...` it writes (Rust 2018 paths, `pub use
b::...` re-exports included) is an edge to its own top-level module `b`. A
name the crate root re-exports (`pub use error::Error;` in lib.rs) counts as
its defining module, so `crate::Error` is an edge to `error`; a name the
root defines itself (or imports without `pub use`) is an edge to the root,
so a root that holds code its modules use and calls into them closes a
circle. A file's own `#[cfg(test)] mod tests` importing `super::*` is the
file itself and no edge. Crates depend on each other without cycles by
construction (cargo refuses them); this covers the rest.

Usage: scripts/check-module-cycles.py [CRATE_DIR ...]  (default: every
workspace member with a src/ folder). Prints each circle and exits 1.
"""

import re
import sys
from pathlib import Path

PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP_USE_RE = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^}]*)\}", re.S)
REEXPORT_RE = re.compile(r"^\s*pub\s+use\s+([A-Za-z_][A-Za-z0-9_]*)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*(?:\s+as\s+[A-Za-z_][A-Za-z0-9_]*)?)\s*;", re.M)


def modules(src: Path, exclude=()):
    """module path (tuple) -> file"""
    out = {}
    for f in sorted(src.rglob("*.rs")):
        if any(d in f.parents for d in exclude):
            continue
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts == ["lib"] or parts == ["main"]:
            parts = []
        elif parts and parts[0] == "bin":
            continue  # extra binaries are roots of their own
        elif parts[-1] == "mod":
            parts = parts[:-1]
        out.setdefault(tuple(parts), f)
    return out


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def rooted(text: str, names):
    """the root's bare paths to its own modules (`b::run`) written `crate::b::run`"""
    if not names:
        return text
    alternatives = "|".join(re.escape(n) for n in sorted(names))
    return re.sub(rf"(?<![\w:$])({alternatives})::", r"crate::\1::", text)


def reexports(root_text: str):
    """name re-exported by the crate root -> defining module (tuple)"""
    out = {}
    for m in REEXPORT_RE.finditer(root_text):
        module = (m.group(1),) + tuple(p for p in m.group(2).split("::") if p)
        names = m.group(3)
        if names.startswith("{"):
            names = [n.strip().split(" as ")[-1].strip() for n in names[1:-1].split(",") if n.strip()]
        else:
            names = [re.split(r"\s+as\s+", names)[-1]]
        for n in names:
            out[n] = module
    return out


def resolve(here, kind, segs, mods, roots):
    if kind == "crate":
        base = ()
    elif kind == "super":
        base = here[:-1]
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
    else:
        base = here
    full = base + tuple(segs)
    if kind == "crate" and segs and segs[0] in roots and (segs[0],) not in mods:
        # re-exported from another crate (`pub use ledger::x as y;`): no edge
        return roots[segs[0]] if roots[segs[0]] in mods else None
    best = None
    for i in range(len(full), -1, -1):
        if full[:i] in mods:
            best = full[:i]
            break
    return best


def edges_of(here, text, mods, roots):
    found = set()
    paths = []
    for m in GROUP_USE_RE.finditer(text):
        prefix = [p for p in m.group(2).split("::") if p]
        for item in m.group(3).split(","):
            item = item.strip().split(" as ")[0].strip()
            if item and item != "self":
                paths.append((m.group(1), prefix + [p for p in item.split("::") if p]))
            elif item == "self":
                paths.append((m.group(1), prefix))
    for m in PATH_RE.finditer(text):
        paths.append((m.group(1), [p for p in m.group(2).split("::") if p]))
    for kind, segs in paths:
        target = resolve(here, kind, segs, mods, roots)
        if target is not None and target != here and not (here[: len(target)] == target and kind == "super"):
            found.add(target)
    return found


def cycles(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def binary_roots(crate: Path):
    """folders of binaries whose main.rs is not at src/ (a crate of their own)"""
    text = (crate / "Cargo.toml").read_text()
    out = []
    for m in re.finditer(r'path\s*=\s*"(src/[^"]+)/main\.rs"', text):
        out.append(crate / m.group(1))
    return out


def check(crate: Path):
    bins = binary_roots(crate)
    ok = check_tree(crate.name, crate / "src", bins)
    for b in bins:
        ok = check_tree(f"{crate.name} ({b.name})", b, []) and ok
    return ok


def check_tree(name: str, src: Path, exclude):
    mods = modules(src, exclude)
    root_file = mods.get(())
    roots = reexports(strip_comments(root_file.read_text())) if root_file else {}
    top = {m[0] for m in mods if len(m) == 1}
    graph = {}
    for here, f in mods.items():
        text = strip_comments(f.read_text())
        if here == ():
            text = rooted(text, top)  # the root names its modules bare too
        graph[here] = edges_of(here, text, mods, roots)
    bad = cycles(graph)
    for comp in bad:
        names = sorted("::".join(m) or "(root)" for m in comp)
        print(f"{name}: import circle among {len(comp)} modules: {', '.join(names)}")
    return not bad


def members():
    root = Path(__file__).resolve().parent.parent
    text = (root / "Cargo.toml").read_text()
    m = re.search(r"members\s*=\s*\[([^\]]*)\]", text)
    return [root / n.strip().strip('"') for n in m.group(1).split(",") if n.strip()]


def main():
    crates = [Path(a) for a in sys.argv[1:]] or members()
    ok = all([check(c) for c in crates if (c / "src").is_dir()])
    if ok:
        print(f"no import circles in {len(crates)} crates")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
