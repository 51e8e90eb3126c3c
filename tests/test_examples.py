"""The examples run: the notebook's cells in order on one event loop, as Jupyter would."""

from __future__ import annotations

import ast
import asyncio
import builtins
import contextlib
import io
import json
import types
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_notebook_cells_run_in_order() -> None:
    notebook = json.loads((EXAMPLES / "notebook.ipynb").read_text())
    namespace: dict[str, object] = {"__name__": "notebook", "__builtins__": builtins}  # as in Jupyter
    loop = asyncio.new_event_loop()
    printed: dict[str, str] = {}  # what each cell printed, by cell id
    try:
        for cell in notebook["cells"]:
            if cell["cell_type"] != "code":
                continue
            code = compile("".join(cell["source"]), "notebook", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            with contextlib.redirect_stdout(io.StringIO()) as out:
                result = types.FunctionType(code, namespace)()
                if asyncio.iscoroutine(result):
                    loop.run_until_complete(result)
            printed[cell.get("id", "")] = out.getvalue()
    finally:
        loop.close()
    assert namespace["fired"] == 1
    assert str(namespace["state"].status) == "awaiting_lfa"  # type: ignore[attr-defined]
    history = namespace["history"]  # mako_actors.timeline(): the statuses agree with state_at's
    assert [e.event_type for e in history][-1] == "gpke.anmeldung_decided"  # type: ignore[attr-defined]
    assert history[-1].status == "confirmed" and namespace["statuses"] == [e.status for e in history]  # type: ignore[attr-defined,index]
    # the re-processing cell: every process counted once per configuration, and moving the
    # LFA answer Frist changes some processes' answers
    table: dict[str, dict[str, int]] = namespace["frist_table"]  # type: ignore[assignment]
    processes = len(namespace["answers"]["09:00"])  # type: ignore[index]
    assert processes > 50 and all(
        sum(c[name] for c in table.values()) == processes for name in ("09:00", "12:00")
    )
    assert namespace["changed"]
    # ... in the expected direction: a later Frist moves LFA answers from "after the Frist" to
    # "in time" and never the other way
    outcomes: dict[str, dict[str, int]] = namespace["outcomes"]  # type: ignore[assignment]
    late = {name: outcomes[name]["answered after the Frist"] for name in ("09:00", "12:00")}
    in_time = {
        name: sum(n for row, n in outcomes[name].items() if row.startswith("answered in time"))
        for name in ("09:00", "12:00")
    }
    assert late["12:00"] < late["09:00"]
    assert in_time["12:00"] - in_time["09:00"] == late["09:00"] - late["12:00"]
    # the notebook is committed with its outputs: they must be what its cells compute today
    # (re-execute it after changing what it shows: `jupyter nbconvert --to notebook --execute
    # --inplace examples/notebook.ipynb`, with the `notebook` extra installed)
    (compare,) = [c for c in notebook["cells"] if c.get("id") == "compare"]
    shown = "".join("".join(o.get("text", "")) for o in compare["outputs"])
    for row in sorted(set(outcomes["09:00"]) | set(outcomes["12:00"])):
        counts = f"{row:<40} {outcomes['09:00'][row]:>5} {outcomes['12:00'][row]:>5}"
        assert counts in shown, f"stale notebook output: {counts!r} not in the committed comparison"
    # ... all of it (the decision codes' table too: a stale A34 where A21 is computed was missed)
    assert shown == printed["compare"], "stale notebook output: re-execute the notebook"


def test_quickstart_script_runs(capsys: pytest.CaptureFixture[str]) -> None:
    import runpy

    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    assert capsys.readouterr().out.strip() == "total=50 2"  # state and event count after a restart
