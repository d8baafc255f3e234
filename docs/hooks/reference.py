"""MkDocs hook: the Reference page, generated at every build from MLproject and each step's argument parser, so it
cannot go stale.

For each MLproject entry point: its parameters with the type and default `mlflow run` passes, and from the step the
command runs (`python -m steps.<name>`) the argparse help of the option each parameter is passed as; then the
options the step takes that MLproject does not pass (reachable with `python -m steps.<name>` only). An MLproject
parameter that the step's parser does not take fails the build (`mkdocs build --strict` in CI).

`reference_markdown(repo)` is the whole page; tests/unit/test_docs.py calls it directly.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import re
import sys
from pathlib import Path
from typing import NamedTuple

import yaml

REPO = Path(__file__).resolve().parents[2]
PAGE = "reference.md"
_STEP = re.compile(r"python -m (steps\.\w+)")
_OPTION = re.compile(r"--(\w+) \{(\w+)\}")


class Option(NamedTuple):
    name: str
    help: str
    default: object
    required: bool


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__("parser captured")
        self.parser = parser


@contextlib.contextmanager
def _capturing_parsers():
    """Make `ArgumentParser.parse_args` hand over the parser instead of parsing: a step's `parse_args` builds its
    parser as it always does and nothing is read from the command line."""
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = capture
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original


def step_parser(module_name: str, repo: Path = REPO) -> argparse.ArgumentParser:
    """The parser `<module>.parse_args` builds (the module imported from `repo`)."""
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    module = importlib.import_module(module_name)
    with _capturing_parsers():
        try:
            module.parse_args([])
        except _Captured as captured:
            return captured.parser
    raise RuntimeError(f"{module_name}.parse_args did not call ArgumentParser.parse_args")


def _help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    try:
        return parser._get_formatter()._expand_help(action)  # %(default)s and %% as `--help` prints them
    except (KeyError, TypeError, ValueError):
        return action.help


def step_options(parser: argparse.ArgumentParser) -> dict[str, Option]:
    options = {}
    for action in parser._actions:
        long = [s for s in action.option_strings if s.startswith("--")]
        if not long or isinstance(action, argparse._HelpAction):
            continue
        name = long[0][2:]
        options[name] = Option(name, _help_text(parser, action), action.default, action.required)
    return options


def entry_points(repo: Path = REPO) -> dict[str, dict]:
    """MLproject's entry points, in file order."""
    return yaml.safe_load((repo / "MLproject").read_text())["entry_points"]


def _cell(text: str) -> str:
    """Markdown table cell: one line, `|` escaped, `<`/`>` outside code spans as entities (not HTML tags)."""
    parts = " ".join(str(text).split()).replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _value(value: object) -> str:
    if value is None:
        return "(required)"
    text = str(value)
    return "`\"\"`" if text == "" else f"`{text}`"


def _description(parser: argparse.ArgumentParser) -> tuple[str, str]:
    text = (parser.description or "").strip()
    first, _, rest = text.partition("\n\n")  # train's docstring goes on with a torchrun example
    return " ".join(first.split()), rest


def entry_point_markdown(name: str, spec: dict, repo: Path = REPO) -> str:
    command = " ".join(spec["command"].split())
    match = _STEP.search(command)
    if not match:
        raise ValueError(f"MLproject entry point {name!r}: no `python -m steps.<name>` in its command")
    module = match.group(1)
    parser = step_parser(module, repo)
    options = step_options(parser)
    passed_as = {param: option for option, param in _OPTION.findall(command)}
    parameters = spec.get("parameters") or {}
    missing = sorted(set(parameters) - set(passed_as))
    if missing:
        raise ValueError(f"MLproject entry point {name!r}: parameters {missing} are not passed in its command")
    unknown = sorted(option for option in passed_as.values() if option not in options)
    if unknown:
        raise ValueError(f"MLproject entry point {name!r} passes --{', --'.join(unknown)}, which {module} does not "
                         "take")
    summary, details = _description(parser)
    lines = [f"## `{name}`", "", summary, "",
             f"Runs `python -m {module}`. `mlflow run . -e {name} --env-manager local -P <parameter>=<value> ...`"
             if name != "main" else
             f"Runs `python -m {module}`. `mlflow run . --env-manager local -P <parameter>=<value> ...` (the default "
             "entry point)", ""]
    if details:
        lines += ["```", details.strip("\n"), "```", ""]
    lines += ["| `-P` parameter | type | default | meaning (the step's `--help`) |", "|---|---|---|---|"]
    for param, declared in parameters.items():
        option = options[passed_as[param]]
        default = declared.get("default") if isinstance(declared, dict) else None
        kind = declared.get("type", "string") if isinstance(declared, dict) else "string"
        meaning = option.help or ""
        if option.required and default is None:
            meaning = f"required. {meaning}".strip()
        lines.append(f"| `{param}` | {kind} | {_value(default)} | {_cell(meaning)} |")
    extra = [option for option in options.values() if option.name not in passed_as.values()]
    if extra:
        lines += ["", f"Taken by `python -m {module}` but not passed by `MLproject`:", "",
                  "| option | default | meaning |", "|---|---|---|"]
        for option in extra:
            default = "(required)" if option.required else _value(option.default)
            lines.append(f"| `--{option.name}` | {default} | {_cell(option.help)} |")
    return "\n".join(lines) + "\n"


def reference_markdown(repo: Path = REPO) -> str:
    points = entry_points(repo)
    index = ", ".join(f"[`{name}`](#{name})" for name in points)
    head = f"""# Reference

Every entry point of `MLproject` and its parameters, generated when this site is built from `MLproject` (types and
the defaults `mlflow run` passes) and each step's own argument parser (`steps/<name>.py`, its `--help`), by
`docs/hooks/reference.py`: it cannot disagree with the code it was built from. The same entry points, in the same
form, are in `deploy/kubernetes/MLproject` (a test keeps them equal).

MLproject has no integer type: counts are declared `float` and read as whole numbers (`3` and `3.0` are 3); an
empty string means "not set" where the meaning says so. Every value is checked before anything is logged, and a bad
one is refused in one `error:` line naming the `-P` parameter
([The pipeline](pipeline.md#parameters-checked-before-anything-is-logged)).

Entry points: {index}.
"""
    return head + "\n" + "\n".join(entry_point_markdown(name, spec, repo) for name, spec in points.items())


def on_files(files, config):
    """Add the generated page to the site (it is not a file in docs/)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=reference_markdown(REPO)))
    return files
