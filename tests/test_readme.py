"""CI must install and test with the commands README.md gives users."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith((".venv/", "python3 -m venv"))]


def test_ci_runs_readme_commands():
    readme = _commands((ROOT / "README.md").read_text(encoding="utf-8"))
    ci = _commands((ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    setup = 'python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -e ".[dev]"'
    assert setup in readme
    assert ".venv/bin/python -m pytest" in readme
    assert ci == [setup, ".venv/bin/python -m pytest"]
