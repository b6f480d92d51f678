"""The README's two commands are the ones that work: CI runs the test command as written."""
from pathlib import Path


def _commands():
    lines = [l.strip() for l in Path("README.md").read_text().splitlines() if l.startswith("    python3 -m venv")]
    assert len(lines) >= 2, "the README starts with an install+train and an install+test command"
    return lines[0], lines[1]


def test_ci_runs_the_readme_test_command():
    _, test_command = _commands()
    assert "pytest" in test_command
    assert test_command in Path(".ci/run").read_text().splitlines()


def test_train_command_uses_a_shipped_config():
    train_command, _ = _commands()
    config = train_command.split("--config ")[1].split()[0]
    assert Path(config).is_file()
