"""The notebook-style example runs as a reader would run it, on the tiny model."""

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_notebook_example_trains_and_answers(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    names = runpy.run_path(str(EXAMPLES / "notebook.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "ANLS before" in out and (tmp_path / "runs" / "notebook" / "final").is_dir()
    answers = out.strip().splitlines()[-2:]
    assert answers[0] and answers[1].startswith("["), "one answer, then a list of two"
    assert names["summary"]["steps"] == 30
