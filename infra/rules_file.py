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
    import yaml

    from leadflow.domain.errors import RulesError
    from leadflow.domain.rules import parse_rules

    source = str(path)
    checked = Checked(source)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        checked.problems.append(Problem(None, "", f"cannot read the file: {getattr(exc, 'strerror', None) or exc}"))
        return checked
    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = " ".join(str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p) or str(exc)
        checked.problems.append(Problem(mark.line + 1 if mark else None, "", f"not valid YAML: {reason}"))
        return checked
    try:
        rules = parse_rules(data, source=source)
    except RulesError as exc:
        for detail in exc.details or [{"reason": exc.message}]:
            checked.problems.append(Problem(_line_of(root, detail.get("path") or []), "", detail["reason"]))
        return checked
    eng = rules.engagement
    custom = f"; your event types: {', '.join(rules.events)}" if rules.events else ""
    checked.summary = (f"rules {rules.version} (language {rules.language}): {len(rules.fit.rules)} fit rules, "
                       f"{len(eng.rules)} engagement rules, {len(eng.aggregates)} aggregates, "
                       f"{len(rules.intent_validation)} intent rules{custom}")
    return checked
