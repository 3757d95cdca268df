"""The public API's types, checked with `mypy --strict`: the README's Python blocks,
`examples/`, and the cases of tests/typing_cases/public_api.py."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tokenize
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "typing_cases" / "public_api.py"
ERROR = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: (?P<message>.*?)  \[(?P<code>[a-z-]+)\]$")
EXPECTED_ERROR = re.compile(r"^#\s*E:\s*(?P<code>[a-z-]+)\s*$")


def mypy(*paths: Path | str) -> tuple[int, str]:
    """Run `mypy --strict` from the repository, so that it reads pyproject.toml, finds
    loom_redis there and shares the cache of `make lint`."""
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    return run.returncode, run.stdout + run.stderr


def write_readme_blocks(directory: Path) -> list[Path]:
    """Each ```python block of the README as a module: `greeting.py` for the block that
    starts with `# greeting.py` (the later blocks import it), `readme_block_N.py` else."""
    text = (ROOT / "README.md").read_text()
    paths = []
    for number, block in enumerate(re.findall(r"^```python\n(.*?)^```", text, re.M | re.S), 1):
        named = re.match(r"# (\w+\.py)\n", block)
        path = directory / (named.group(1) if named else f"readme_block_{number}.py")
        path.write_text(block)
        paths.append(path)
    return paths


def test_readme_python_blocks_pass_mypy_strict(tmp_path: Path) -> None:
    paths = write_readme_blocks(tmp_path)
    assert "greeting.py" in [path.name for path in paths]
    assert len(paths) >= 2
    code, output = mypy(*paths)
    assert code == 0, output


def test_examples_pass_mypy_strict() -> None:
    code, output = mypy("examples")
    assert code == 0, output


def expected_errors(path: Path) -> dict[int, str]:
    """line -> the code of the error expected there (a `# E: code` comment)."""
    expected = {}
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        marker = EXPECTED_ERROR.match(token.string) if token.type == tokenize.COMMENT else None
        if marker:
            expected[token.start[0]] = marker["code"]
    return expected


def test_public_api_types() -> None:
    """Every `assert_type` of the cases holds, and each line marked `# E: code` (and
    no other) gets an error of that code."""
    expected = expected_errors(CASES)
    code, output = mypy(CASES.relative_to(ROOT))
    errors: dict[int, list[str]] = defaultdict(list)
    for line in output.splitlines():
        found = ERROR.match(line)
        if found:
            assert Path(found["path"]).name == CASES.name, f"an error outside the cases: {line}"
            errors[int(found["line"])].append(f"[{found['code']}] {found['message']}")
    problems = [
        f"line {number}: no error, expected one of code {want}"
        for number, want in sorted(expected.items())
        if number not in errors
    ]
    for number, found_errors in sorted(errors.items()):
        want = f"[{expected.get(number)}] "
        problems += [
            f"line {number}: {error}" for error in found_errors if not error.startswith(want)
        ]
    assert code == 1 and len(expected) >= 10, output
    assert not problems, "unexpected mypy results:\n" + "\n".join(problems)
