"""A call's state has one owner: no module but ``tracker.py`` assigns a field of a ``CallTracker``;
the others call its methods (the HTTP layer writes its own ``ReadTiming``, the lifecycle its own
``Progress``)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "nexent_autoinstrument"


def _names_a_tracker(node: ast.expr) -> bool:
    """``tracker``, ``self.tracker``, ``call.tracker``, ``self._tracker``...: an expression that is a tracker."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name.lstrip("_") == "tracker" or name.endswith("_tracker")


def test_no_module_but_the_tracker_assigns_a_tracker_field() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "tracker.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = [t for target in node.targets for t in (target.elts if isinstance(target, ast.Tuple)
                                                                  else [target])]
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and _names_a_tracker(target.value):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(target)}")
    assert offenders == []
