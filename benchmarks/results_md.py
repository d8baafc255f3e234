"""benchmarks/RESULTS.md holds one section per benchmark run (a `# ` heading up to the next one): each script
replaces its own section and keeps the others."""
from __future__ import annotations

from pathlib import Path


def write_section(out: Path, heading: str, lines: list[str], ahead_of: str = "") -> None:
    """Replace the section under `heading` (its whole `# ` line); a section not there yet goes ahead of the first
    one whose heading starts with `ahead_of`, else at the end."""
    text = out.read_text() if out.exists() else ""
    block, padded = "\n".join(lines).strip("\n"), f"\n{text}"
    if f"\n{heading}\n" in padded:
        before, _, after = padded.partition(f"\n{heading}\n")
        rest = after.split("\n# ", 1)[1] if "\n# " in after else ""
        text = before.strip("\n") + "\n\n" + block + ("\n\n# " + rest if rest else "\n")
    elif ahead_of and f"\n{ahead_of}" in padded:
        before, marker, after = padded.partition(f"\n{ahead_of}")
        text = before.strip("\n") + "\n\n" + block + "\n" + marker + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text.lstrip("\n"))
