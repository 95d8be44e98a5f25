"""The layering of the package, read from the source: no import circle, no arrow pointing up.

Every ``import`` in every module of ``cloudp2p`` counts, also those inside functions and under
``TYPE_CHECKING``: a circle that only type checkers see still ties two modules together.

- No circle between modules.
- Product code never imports the test harness (``cloudp2p.testing``) or a front end
  (``cloudp2p.tools``, the ``cloudp2p`` command in ``cloudp2p.client.cli``).
- The two cluster components, ``membership`` and ``routing``, never import each other.
- The ``cloudp2p`` command stays light: nothing it imports pulls in Twisted.
- The client's layers (docs/client.md, "Layers"): the command table and its checks are light
  and know no story; the stories reach the daemon only through their parts, never the daemon's
  modules, the app, the tap or a front end; the daemon never imports a story, the app, the table
  or a front end; only the tap builds the app; the web app uses the table, never the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cloudp2p

ROOT = Path(cloudp2p.__file__).parent
HARNESS_AND_FRONT_ENDS = ("cloudp2p.testing", "cloudp2p.tools", "cloudp2p.client.cli")


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The module of ours that ``name`` (a module, or a name inside one) belongs to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imported(module: str, path: Path) -> set[str]:
    """Every raw name ``module`` imports (``a.b`` and, for ``from a import b``, also ``a.b``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(arrows between our modules, every raw imported name per module)."""
    arrows: dict[str, set[str]] = {}
    raw: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        raw[module] = _imported(module, path)
        targets = {_owner(n) for n in raw[module] if n.startswith("cloudp2p")}
        # A package's __init__ re-exporting its own modules is not an arrow back into itself.
        own = module + "." if path.name == "__init__.py" else None
        arrows[module] = {t for t in targets if t and t != module and not (own and t.startswith(own))}
    return arrows, raw


ARROWS, RAW = _graph()


def _circles(arrows: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that reach each other (strongly connected components larger than one)."""
    order: list[str] = []
    seen: set[str] = set()
    for start in sorted(arrows):  # first pass: finishing order, iteratively
        if start in seen:
            continue
        seen.add(start)
        stack = [(start, iter(sorted(arrows[start])))]
        while stack:
            node, rest = stack[-1]
            nxt = next((t for t in rest if t not in seen), None)
            if nxt is None:
                stack.pop()
                order.append(node)
            else:
                seen.add(nxt)
                stack.append((nxt, iter(sorted(arrows[nxt]))))
    reverse: dict[str, set[str]] = {m: set() for m in arrows}
    for source, targets in arrows.items():
        for target in targets:
            reverse[target].add(source)
    groups, placed = [], set()
    for start in reversed(order):  # second pass on the reversed graph
        if start in placed:
            continue
        group, todo = [], [start]
        placed.add(start)
        while todo:
            node = todo.pop()
            group.append(node)
            for prev in reverse[node] - placed:
                placed.add(prev)
                todo.append(prev)
        if len(group) > 1:
            groups.append(sorted(group))
    return groups


def test_the_walk_sees_the_package():
    assert len(MODULES) > 50
    assert "cloudp2p.routing.router" in ARROWS["cloudp2p.server.service"]
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    assert _circles(ARROWS) == []


def test_product_code_never_imports_the_harness_or_a_front_end():
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in ARROWS.items()
        if not source.startswith(HARNESS_AND_FRONT_ENDS)
        for target in targets
        if target.startswith(HARNESS_AND_FRONT_ENDS)
    )
    assert upward == []


def _area(module: str) -> str:
    return (module.split(".") + [""])[1]


def test_membership_and_routing_never_import_each_other():
    crossing = sorted(
        f"{source} -> {target}"
        for source, targets in ARROWS.items()
        for target in targets
        if {_area(source), _area(target)} == {"membership", "routing"}
    )
    assert crossing == []


def test_the_command_line_pulls_in_no_twisted():
    reached, todo = set(), ["cloudp2p.client.cli"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(ARROWS[module])
    heavy = sorted(m for m in reached for name in RAW[m] if name.split(".")[0] == "twisted")
    assert heavy == []


CLIENT = "cloudp2p.client"
STORIES = f"{CLIENT}.stories"
FRONT_ENDS = (f"{CLIENT}.cli", f"{CLIENT}.tap", "cloudp2p.web")
DAEMON_CORE = tuple(
    f"{CLIENT}.{name}"
    for name in (
        "daemon", "post", "peer", "state", "home", "identity", "cloud", "config",
        "known_keys", "lookup_cache", "writer", "images", "control",
    )
)  # fmt: skip


def _arrows_from(sources: tuple[str, ...], targets: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{source} -> {target}"
        for source, found in ARROWS.items()
        if source.startswith(sources)
        for target in found
        if target.startswith(targets)
    )


def test_the_stories_reach_the_daemon_only_through_their_parts():
    banned = (f"{CLIENT}.daemon", f"{CLIENT}.post", f"{CLIENT}.app", *FRONT_ENDS)
    assert _arrows_from((STORIES,), banned) == []


def test_the_daemon_never_imports_a_story_the_app_the_table_or_a_front_end():
    banned = (STORIES, f"{CLIENT}.app", f"{CLIENT}.table", f"{CLIENT}.texts", *FRONT_ENDS)
    # the client's config composes the [web] section (a config section, not the web front end)
    arrows = [a for a in _arrows_from(DAEMON_CORE, banned) if not a.endswith("-> cloudp2p.web.config")]
    assert arrows == []


def test_only_the_tap_builds_the_client_app():
    users = sorted(source for source, found in ARROWS.items() if f"{CLIENT}.app" in found)
    assert users == [f"{CLIENT}.tap"]


def test_the_command_table_is_light_and_knows_no_story():
    reached, todo = set(), [f"{CLIENT}.table"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(ARROWS[module])
    assert sorted(m for m in reached for name in RAW[m] if name.split(".")[0] == "twisted") == []
    assert sorted(m for m in reached if m.startswith((STORIES, f"{CLIENT}.daemon"))) == []


def test_the_web_app_uses_the_table_never_the_command_line():
    assert _arrows_from(("cloudp2p.web",), (f"{CLIENT}.cli", f"{CLIENT}.tap", f"{CLIENT}.app")) == []
    assert f"{CLIENT}.table" in ARROWS["cloudp2p.web.commands"]
