"""`leadflow rules check FILE`: a rules file validated as the functions will load it,
every error printed with its place in the file (line and path), before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Problem:
    line: int | None  # 1-based line in the file, when the path leads to one
    where: str  # the path, as the rules' own messages write it
    reason: str

    def text(self, source: str) -> str:
        return f"{source}:{self.line}: {self.reason}" if self.line else f"{source}: {self.reason}"


@dataclass
class Checked:
    source: str
    summary: str = ""
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _line_of(node: Any, path: list[Any]) -> int | None:
    """The line of the deepest YAML node the path reaches (a key's line for a missing
    field: where it should have been written)."""
    import yaml

    line = node.start_mark.line + 1 if node is not None else None
    for step in path:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(step):
                    node, line = value, key.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def check(path: str | Path) -> Checked:
    """The file through the loader the functions use; on validation errors, the file is
    read again only to find each error's line."""
    import yaml

    from leadflow.domain.errors import RulesError
    from leadflow.settings import load_rules

    source = str(path)
    checked = Checked(source)
    try:
        rules = load_rules(source)
    except RulesError as exc:
        root = None
        if any(d.get("path") for d in exc.details):
            root = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        for detail in exc.details or [{"reason": exc.message}]:
            line = detail.get("line") or (_line_of(root, detail["path"]) if detail.get("path") else None)
            checked.problems.append(Problem(line, "", detail["reason"]))
        return checked
    eng = rules.engagement
    custom = f"; your event types: {', '.join(rules.events)}" if rules.events else ""
    checked.summary = (f"rules {rules.version} (language {rules.language}): {len(rules.fit.rules)} fit rules, "
                       f"{len(eng.rules)} engagement rules, {len(eng.aggregates)} aggregates, "
                       f"{len(rules.intent_validation)} intent rules{custom}")
    return checked
