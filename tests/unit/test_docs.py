"""The docs site: README.md stays a front page, and the generated Reference (docs/hooks/reference.py, run by
`mkdocs build`) covers every MLproject entry point and parameter with the step's own help. The full
`mkdocs build --strict` runs in .ci/run; this calls the hook's generating function directly (no MkDocs)."""
from __future__ import annotations

import importlib.util
import re

import pytest
import yaml

from tests.helpers import REPO

README_MAX_LINES = 200


def _hook():
    spec = importlib.util.spec_from_file_location("docs_reference_hook", REPO / "docs" / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> str:
    return _hook().reference_markdown(REPO)


def _sections(markdown: str) -> dict[str, str]:
    parts = re.split(r"^## `(\w+)`$", markdown, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move the detail into docs/"
    assert "python -m pytest" in lines  # the test command, as CI runs it


def test_every_entry_point_and_parameter_is_in_the_generated_reference(reference):
    mlproject = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
    sections = _sections(reference)
    assert list(sections) == list(mlproject)
    for name, spec in mlproject.items():
        rows = re.findall(r"^\| `(\w+)` \|", sections[name], flags=re.MULTILINE)
        params = list(spec.get("parameters") or {})
        assert rows[:len(params)] == params, name


def test_reference_carries_the_steps_help(reference):
    train = _sections(reference)["train"]
    assert re.search(r"^\| `label_smoothing` \| float \| `0.0` \| label smoothing of the cross-entropy", train,
                     flags=re.MULTILINE)
    assert "`--run_name`" in train  # a step option MLproject does not pass is listed apart


def test_a_parameter_the_step_does_not_take_fails_the_build():
    hook = _hook()
    spec = {"parameters": {"bogus": {"type": "float", "default": 1}},
            "command": "python -m steps.monitor --bogus {bogus}"}
    with pytest.raises(ValueError, match="--bogus"):
        hook.entry_point_markdown("monitor", spec, REPO)


def test_docs_pages_link_only_to_pages_that_exist():
    """What `mkdocs build --strict` checks too, here without MkDocs: every relative .md link from a page or the
    README's links into docs/ names a file there (or the generated reference)."""
    docs = REPO / "docs"
    pages = {p.name for p in docs.glob("*.md")} | {"reference.md"}
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]
    listed = set(re.findall(r"[\w-]+\.md", str(nav)))
    assert listed == pages, "every page in docs/ is in mkdocs.yml's nav, and only those"
    for path in [*docs.glob("*.md"), REPO / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", path.read_text()):
            name = target.removeprefix("docs/")
            assert name in pages, f"{path.name} links to {target}"
