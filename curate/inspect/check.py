"""`curate check`: data-quality gates for CI, read from a YAML rules file.

A rules file is a mapping with one key, `rules`: a list whose items are a rule
name, or a mapping with `rule:` (the name), optional `name:` (a label, so one rule
can appear twice with other parameters) and the rule's parameters:

    rules:
      - schema_valid
      - rule: max_reject_fraction
        max: 0.5

Anything else (unknown rule or parameter, wrong type, a fraction outside [0, 1])
raises RulesError, which the command turns into exit code 2.
"""

from __future__ import annotations

import json
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from curate.inspect.check_rules import RULES, Context, Param

DEFAULT_RULES_FILE = Path("rules") / "default.yaml"
FORMATS = ("table", "json", "junit")


class RulesError(ValueError):
    """The rules file cannot be used as written."""


@dataclass(frozen=True)
class RuleCall:
    rule: str
    name: str
    params: dict[str, Any]


@dataclass
class RuleResult:
    rule: str
    name: str
    passed: bool
    count: int
    message: str
    offending: list[str]
    params: dict[str, Any]
    seconds: float


def default_rules_file() -> Path:
    """`rules/default.yaml` in the working folder, else the one beside the source checkout."""
    here = DEFAULT_RULES_FILE
    if here.is_file():
        return here
    checkout = Path(__file__).resolve().parents[1] / DEFAULT_RULES_FILE
    if checkout.is_file():
        return checkout
    raise RulesError(f"no {DEFAULT_RULES_FILE} here: pass --rules FILE")


def _check_param(where: str, key: str, value: Any, p: Param) -> Any:
    kinds = p.kind if isinstance(p.kind, tuple) else (p.kind,)
    if value is None and not p.required:
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise RulesError(f"{where}: {key} must be {names}, got {value!r}")
    if p.fraction and not (isinstance(value, int | float) and 0 <= value <= 1):
        raise RulesError(f"{where}: {key} is a fraction in [0, 1], got {value!r}")
    if isinstance(value, list) and not all(isinstance(v, str) for v in value):
        raise RulesError(f"{where}: {key} must be a list of strings, got {value!r}")
    return value


def parse_rules(data: Any) -> list[RuleCall]:
    """Validate the parsed YAML of a rules file."""
    if not isinstance(data, dict) or set(data) != {"rules"} or not isinstance(data["rules"], list):
        raise RulesError("a rules file is a mapping with one key, 'rules', holding a list")
    calls: list[RuleCall] = []
    for i, item in enumerate(data["rules"], 1):
        where = f"rule {i}"
        if isinstance(item, str):
            item = {"rule": item}
        if not isinstance(item, dict) or not isinstance(item.get("rule"), str):
            raise RulesError(f"{where}: give a rule name or a mapping with 'rule: NAME'")
        spec = RULES.get(item["rule"])
        if spec is None:
            raise RulesError(f"{where}: unknown rule {item['rule']!r}; known: "
                             f"{', '.join(RULES)}")
        where = f"rule {i} ({spec.name})"
        unknown = set(item) - {"rule", "name"} - set(spec.params)
        if unknown:
            raise RulesError(f"{where}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                             f"it takes {', '.join(spec.params) or 'none'}")
        params = {}
        for key, p in spec.params.items():
            if p.required and item.get(key) is None:
                raise RulesError(f"{where}: needs {key} ({p.help})")
            params[key] = _check_param(where, key, item.get(key, p.default), p)
        name = item.get("name", spec.name)
        if not isinstance(name, str) or not name:
            raise RulesError(f"{where}: name must be a non-empty string")
        calls.append(RuleCall(spec.name, name, params))
    names = [c.name for c in calls]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RulesError(f"rule names must be unique; give 'name:' to repeats of {dupes}")
    return calls


def load_rules(path: str | os.PathLike[str]) -> list[RuleCall]:
    """Read and validate a YAML rules file."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesError(f"{p}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise RulesError(f"{p}: not valid YAML: {exc}") from exc
    try:
        calls = parse_rules(data)
    except RulesError as exc:
        raise RulesError(f"{p}: {exc}") from exc
    for c in calls:  # eval folders must exist: a typo must not pass silently
        for folder in c.params.get("eval") or []:
            if not Path(folder).is_dir():
                raise RulesError(f"{p}: {c.name}: eval folder {folder} does not exist")
    return calls


def run_checks(paths: Iterable[str | os.PathLike[str]], calls: list[RuleCall], *,
               limit: int = 5) -> list[RuleResult]:
    """Run each rule over the run made of the folders named by `paths`."""
    from curate.report.pipeline import load_run

    ctx = Context(load_run(paths), limit=limit)
    results = []
    for c in calls:
        t = time.perf_counter()
        f = RULES[c.rule].fn(ctx, **c.params)
        results.append(RuleResult(c.rule, c.name, f.count == 0, f.count, f.message,
                                  f.offending[:limit], c.params,
                                  round(time.perf_counter() - t, 3)))
    return results


# -- output --------------------------------------------------------------------------------------
def to_json(results: list[RuleResult], target: str) -> str:
    return json.dumps({"target": target, "passed": all(r.passed for r in results),
                       "failed": [r.name for r in results if not r.passed],
                       "results": [asdict(r) for r in results]}, indent=2, default=str)


def to_junit(results: list[RuleResult], target: str) -> str:
    """JUnit XML: one test case a rule, a <failure> with the first offenders when it fails."""
    failures = sum(not r.passed for r in results)
    seconds = f"{sum(r.seconds for r in results):.3f}"
    suites = ET.Element("testsuites", name="curate check", tests=str(len(results)),
                        failures=str(failures), errors="0", time=seconds)
    suite = ET.SubElement(suites, "testsuite", name=f"curate check {target}",
                          tests=str(len(results)), failures=str(failures), errors="0",
                          skipped="0", time=seconds)
    for r in results:
        case = ET.SubElement(suite, "testcase", classname="curate.check", name=r.name,
                             time=f"{r.seconds:.3f}")
        if r.passed:
            ET.SubElement(case, "system-out").text = r.message
        else:
            fail = ET.SubElement(case, "failure", message=r.message, type=r.rule)
            fail.text = "\n".join([r.message, *r.offending,
                                   *(["..."] if r.count > len(r.offending) else [])])
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, "unicode") + "\n"


def print_table(results: list[RuleResult], target: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    failed = sum(not r.passed for r in results)
    t = Table(title=escape(f"curate check {target}: {len(results) - failed} passed, "
                           f"{failed} failed"))
    t.add_column("rule")
    t.add_column("result")
    t.add_column("found", justify="right")
    t.add_column("details")
    t.add_column("first offending rows", overflow="fold")
    for r in results:
        more = f"\n… and {r.count - len(r.offending)} more" if r.count > len(r.offending) else ""
        t.add_row(escape(r.name), "[green]PASS[/green]" if r.passed else
                  "[bold red]FAIL[/bold red]", str(r.count), escape(r.message),
                  escape("\n".join(r.offending) + more))
    console = Console()
    if not console.is_terminal:  # CI logs: wide enough for a part file's path and its
        console = Console(width=200)  # problem, or a pair id and its note, on one line
    console.print(t)
