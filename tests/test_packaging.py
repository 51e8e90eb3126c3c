"""What a new user meets first: --version, readable help, compatible pins, a type-checkable install."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

from mako_actors.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
RAW_MARKUP = re.compile(r"``|:(func|class|meth|mod|attr):`")


Parser = argparse.ArgumentParser


def parsers(parser: Parser, path: str = "mako-actors") -> Iterator[tuple[str, Parser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from parsers(child, f"{path} {name}")


def test_version_is_the_installed_one() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mako_actors.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"mako-actors {version('mako-actors')}"


def test_help_has_no_raw_markup_and_every_positional_is_described() -> None:
    found = list(parsers(build_parser()))
    names = {path for path, _ in found}
    assert {"mako-actors serve", "mako-actors processes timeline", "mako-actors stats"} <= names
    for path, parser in found:
        text = parser.format_help()
        assert not RAW_MARKUP.search(text), f"{path}: raw reST markup in its help"
        for action in parser._actions:
            if not action.option_strings and not isinstance(action, argparse._HelpAction):
                assert action.help, f"{path}: positional {action.dest!r} has no help"


def test_runtime_pins_are_compatible_ranges_and_the_notebook_extra_exists() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        assert "==" not in requirement, f"{requirement}: an exact pin; use a compatible range"
    calendar = [r for r in project["dependencies"] if r.startswith(("bdew-datetimes", "holidays"))]
    assert len(calendar) == 2 and all("<" in r and ">=" in r for r in calendar)
    extra = " ".join(project["optional-dependencies"]["notebook"])
    assert all(name in extra for name in ("jupyter", "ipykernel", "nbclient"))


def test_make_installs_the_calendar_pinned_within_the_librarys_range() -> None:
    """DOMAIN §3.2: pin the calendar's packages (a ``holidays`` release can move a Werktag). The
    library keeps ranges; ``make`` installs the exact versions of ``constraints.txt``, which
    must lie in them, and is what this environment runs."""
    from packaging.requirements import Requirement

    pins = dict(
        line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert set(pins) == {"bdew-datetimes", "holidays"}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in map(Requirement, project["dependencies"]):
        if requirement.name in pins:
            assert requirement.specifier.contains(pins[requirement.name]), requirement
            assert version(requirement.name) == pins[requirement.name]
    assert "-c constraints.txt" in (REPO / "Makefile").read_text()


def test_a_users_mypy_strict_follows_the_editable_install(tmp_path: Path) -> None:
    """Outside the repository, mypy must find mako_actors' types (the install is not an import hook)."""
    (tmp_path / "meter.py").write_text(
        "from pydantic import BaseModel\n"
        "from mako_actors import Event, Workflow\n\n\n"
        "class Read(BaseModel):\n    kwh: int\n\n\n"
        "class MeterRead(Event, type='meter.read'):\n    kwh: int\n\n\n"
        "class Meter(BaseModel):\n    total: int = 0\n\n\n"
        "def name_of(workflow: Workflow[Read, Meter]) -> int:\n    return workflow.name\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".cache"), "meter.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert "import-not-found" not in done.stdout and "missing library stubs" not in done.stdout, done.stdout
    # The one error is ours, found through mako_actors' types: Workflow.name is a str.
    assert 'Incompatible return value type (got "str", expected "int")' in done.stdout, done.stdout
    assert done.stdout.count("error:") == 1, done.stdout
