"""MLproject's training parameters and deploy/kubernetes/MLproject, rendered from their one declaration.

- `MLproject`: in the entry points train, distill, main and sweep, the `parameters:` lines between the two marker
  comments and the `--x {x}` part of the command are rendered from agnews.params.TRAINING_PARAMETERS (TrainConfig's
  `knob` fields, then registered_model): type (`float` for numbers, counts included: MLproject has no int;
  `string` for text), default, order. The rest of the file is left as written.
- `deploy/kubernetes/MLproject`: its header (comments, name, docker_env: everything before `entry_points:`) kept,
  then the root MLproject's entry points as YAML.

`python tools/mlproject.py` rewrites both files; `python tools/mlproject.py --check` says which are not current
(exit 1). tests/unit/test_declarations.py fails when either committed file is not what this renders.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agnews import params  # noqa: E402  (the repository on the path first, for `python tools/mlproject.py`)

ENTRY_POINTS = ("train", "distill", "main", "sweep")  # the steps that take train's knobs
BEGIN = "# train's knobs: rendered by tools/mlproject.py from agnews.params.TrainConfig; edit them there"
END = "# end of train's knobs"
PARAMETER_INDENT, WIDTH = " " * 6, 118
KUBERNETES = Path("deploy") / "kubernetes" / "MLproject"
KUBERNETES_HEADER = """\
# MLflow's kubernetes backend needs a docker_env project: this is the root MLproject's entry points (a test
# keeps them equal) in the image the root Dockerfile builds. Used by `main -P backend=kubernetes`; see README.
name: agnews-mlops

docker_env:
  image: agnews-mlops:latest

"""


def _scalar(parameter: params.Parameter) -> str:
    text = parameter.listed if parameter.listed is not None else str(parameter.default)
    if isinstance(parameter.default, str) and not re.fullmatch(r"[A-Za-z][A-Za-z0-9._/-]*", text):
        return json.dumps(text)  # "", and text YAML would read otherwise
    return text


def parameter_lines(parameters: tuple[params.Parameter, ...]) -> list[str]:
    return [f"{PARAMETER_INDENT}{p.name}: {{type: {p.mlproject_type}, default: {_scalar(p)}}}" for p in parameters]


def option_lines(parameters: tuple[params.Parameter, ...]) -> list[str]:
    """`--x {x}` for each parameter, packed into lines of at most WIDTH characters."""
    lines: list[str] = []
    for option in (f"--{p.name} {{{p.name}}}" for p in parameters):
        if lines and len(lines[-1]) + 1 + len(option) <= WIDTH:
            lines[-1] += f" {option}"
        else:
            lines.append(f"{PARAMETER_INDENT}{option}")
    return lines


def _entry_point(lines: list[str], name: str) -> tuple[int, int]:
    """The lines of entry point `name`: from its `  name:` line to the next entry point (or the end)."""
    start = lines.index(f"  {name}:")
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^ {0,2}\S", lines[i])), len(lines))
    return start, end


def _render_entry_point(lines: list[str], name: str, parameters: tuple[params.Parameter, ...]) -> list[str]:
    start, end = _entry_point(lines, name)
    block = lines[start:end]
    try:
        begin, finish = block.index(PARAMETER_INDENT + BEGIN), block.index(PARAMETER_INDENT + END)
    except ValueError:
        raise ValueError(f"MLproject entry point {name}: no `{BEGIN}` ... `{END}` lines around train's knobs") from None
    listed = [line.split(":")[0].strip() for line in block[begin + 1:finish]]
    block[begin + 1:finish] = parameter_lines(parameters)
    command = next(i for i, line in enumerate(block) if line.strip() == "command: >-")
    stop = next((i for i in range(command + 1, len(block)) if not block[i].startswith(PARAMETER_INDENT)), len(block))
    text = "\n".join(block[command + 1:stop])
    first = re.search(rf"--{listed[0]} \{{{listed[0]}\}}", text)
    last = re.search(rf"--{listed[-1]} \{{{listed[-1]}\}}", text)
    if not first or not last or text[first.start():last.end()].split() != " ".join(
            f"--{n} {{{n}}}" for n in listed).split():
        raise ValueError(f"MLproject entry point {name}: its command does not pass train's knobs "
                         f"({', '.join(listed)}) together, in that order")
    before, after = text[:first.start()].rstrip(), text[last.end():].lstrip()
    rendered = [*before.split("\n"), *option_lines(parameters), *([PARAMETER_INDENT + after] if after else [])]
    block[command + 1:stop] = "\n".join(rendered).split("\n")
    return [*lines[:start], *block, *lines[end:]]


def render_root(text: str, parameters: tuple[params.Parameter, ...] | None = None) -> str:
    """MLproject `text` with train's knobs (default: cli.TRAINING_PARAMETERS) rendered in train, distill, main and
    sweep; every other line as it was."""
    parameters = params.TRAINING_PARAMETERS if parameters is None else parameters
    lines = text.split("\n")
    for name in ENTRY_POINTS:
        lines = _render_entry_point(lines, name, parameters)
    return "\n".join(lines)


def render_kubernetes(root: str, current: str | None = None) -> str:
    """deploy/kubernetes/MLproject: `current`'s header (default: the shipped one), then `root`'s entry points."""
    header = KUBERNETES_HEADER
    if current and re.search(r"^entry_points:", current, re.M):
        header = current[:re.search(r"^entry_points:", current, re.M).start()]
    entry_points = yaml.safe_load(root)["entry_points"]
    return header + yaml.safe_dump({"entry_points": entry_points}, sort_keys=False, width=200)


def rendered(repo: Path = REPO, parameters: tuple[params.Parameter, ...] | None = None) -> dict[Path, str]:
    """What MLproject and deploy/kubernetes/MLproject should hold, from the files in `repo` and the declaration."""
    root = render_root((repo / "MLproject").read_text(), parameters)
    kube_path = repo / KUBERNETES
    current = kube_path.read_text() if kube_path.exists() else None
    return {repo / "MLproject": root, kube_path: render_kubernetes(root, current)}


def main(argv: list[str]) -> int:
    stale = {path: text for path, text in rendered().items() if not path.exists() or path.read_text() != text}
    for path, text in stale.items():
        if "--check" in argv:
            print(f"{path.relative_to(REPO)} is not current: run python tools/mlproject.py", file=sys.stderr)
        else:
            path.write_text(text)
            print(f"rewrote {path.relative_to(REPO)}")
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
