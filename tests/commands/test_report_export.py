"""report / export / convert given the wrong thing: one line, the right exit status, nothing half-done."""

import json

import pytest
from safetensors.torch import load_file

from florence_tune.cli import main


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "full"
    assert main(["train", "--max-steps", "1", "--batch-size", "2", "--eval-split", "none", "--report-to", "none",
                 "--output-dir", str(run)]) == 0
    return run


def test_merging_a_full_run_says_there_was_nothing_to_merge(full_run, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["export", "--model", str(full_run), "--merge", "--output", str(out)]) == 0
    captured = capsys.readouterr()
    note = captured.err.strip().splitlines()
    assert len(note) == 1 and "nothing to merge" in note[0] and "no LoRA adapters" in note[0], note
    assert str(out) in note[0] and f"exported to {out}" in captured.out
    written, trained = load_file(str(out / "model.safetensors")), load_file(str(full_run / "final" /
                                                                               "model.safetensors"))
    assert written.keys() == trained.keys() and all(written[k].equal(trained[k]) for k in trained)


def test_exporting_a_full_run_without_merge_adds_no_note(full_run, tmp_path, capsys):
    assert main(["export", "--model", str(full_run), "--output", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("argv", "message"), [
    (["export", "--model", "{missing}", "--output", "{tmp}/out"], "not found"),
    (["export", "--model", "{not_a_run}", "--output", "{tmp}/out"], "holds no config.json"),
    (["export", "--model", "{run}", "--output", "{tmp}/file.txt/out"], "'{tmp}/file.txt' is a file"),
    (["report", "{missing}"], "pass a run directory"),
    (["report", "{not_a_run}"], "pass a run directory"),
    (["report", "--compare", "{run}", "{missing}"], "pass a run directory"),
    (["report", "{run}", "--output", "{tmp}/file.txt/report.html"], "'{tmp}/file.txt' is a file"),
    (["report", "--compare", "{run}", "{run}", "--output", "{tmp}/file.txt/c.html"], "'{tmp}/file.txt' is a file"),
])
def test_wrong_folders_are_one_line_and_exit_2(argv, message, full_run, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "not_a_run" / "notes.txt").write_text("x")
    names = {"missing": tmp_path / "missing", "not_a_run": tmp_path / "not_a_run", "run": full_run, "tmp": tmp_path}
    assert main([a.format(**names) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(**names) in err[0], err


@pytest.mark.parametrize(("name", "text"), [("summary.json", "{"), ("config.yaml", "a: [\n"),
                                            ("config.yaml", "- a list\n")])
def test_a_damaged_run_file_is_named_in_one_line(name, text, tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    (tmp_path / name).write_text(text)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"'{tmp_path / name}'" in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "report.html").exists()


def test_a_comparison_goes_into_a_folder_that_does_not_exist_yet(full_run, tmp_path):
    output = tmp_path / "new" / "comparison.html"
    assert main(["report", "--compare", str(full_run), str(full_run), "--output", str(output)]) == 0
    assert "florence-tune comparison" in output.read_text()
