"""Every ```python block of README.md runs as written (issue 13: "a tour that runs").

Each block runs in a fresh interpreter in its own empty temporary folder (so it must be
self-contained: no names from other blocks, no placeholders, no paths relative to the
repository), with one OpenMP/torch thread. A block that needs minutes at full size carries,
just above it, one or more HTML comments the reader does not see::

    <!-- readme-test: replace OLD => NEW -->

and runs here with every ``OLD`` replaced by ``NEW`` (a smaller size or budget); the test fails if
``OLD`` is not in the block, so the substitution cannot go stale silently.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)
_DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*replace\s+(.+?)\s+=>\s+(.*?)\s*-->")


def readme_blocks(text: str | None = None) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """``(id, code, replacements)`` for every python block: the id is ``line<N>-<heading>``, the
    replacements come from the ``readme-test`` comments between the previous block and this one."""
    text = README.read_text() if text is None else text
    blocks, last_end = [], 0
    for m in _FENCE.finditer(text):
        before = text[last_end:m.start()]
        prose = re.sub(r"^```.*?^```", "", text[:m.start()], flags=re.S | re.M)  # no code comments
        headings = re.findall(r"^#+\s+(.+)$", prose, re.M)
        slug = re.sub(r"[^a-z0-9]+", "-", (headings[-1] if headings else "top").lower()).strip("-")[:30]
        line = text.count("\n", 0, m.start()) + 1
        blocks.append((f"line{line}-{slug}", m.group(1), _DIRECTIVE.findall(before)))
        last_end = m.end()
    return blocks


BLOCKS = readme_blocks()


def test_the_readme_has_python_blocks_and_no_placeholders():
    assert len(BLOCKS) >= 6
    for name, code, _ in BLOCKS:
        assert "..." not in re.sub(r"#.*", "", code), f"{name}: a placeholder in the code"
        compile(code, name, "exec")


def test_the_collector_reads_directives():
    text = ("# A\n<!-- readme-test: replace steps=500 => steps=5 -->\n"
            "```python\nrun(steps=500)\n```\n\n## B\n```python\nx = 1\n```\n")
    (n1, c1, r1), (n2, c2, r2) = readme_blocks(text)
    assert n1 == "line3-a" and c1 == "run(steps=500)\n" and r1 == [("steps=500", "steps=5")]
    assert n2 == "line8-b" and r2 == []


@pytest.mark.parametrize("name, code, replacements", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_readme_block_runs(tmp_path, name, code, replacements):
    for old, new in replacements:
        assert old in code, f"{name}: the readme-test replacement {old!r} is not in the block"
        code = code.replace(old, new)
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"README block {name} failed:\n{code}\n--- stderr ---\n{r.stderr[-4000:]}"
