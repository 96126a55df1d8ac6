"""Nothing outside a run is ever deleted or overwritten (--overwrite, convert --overwrite, evaluate --output),
and what a run writes is written atomically."""

import errno
import shutil
from pathlib import Path

import builders
import pytest

from florence_tune.cli import main
from florence_tune.model import loading

TINY_RUN = ["--max-steps", "1", "--holdout-rows", "1", "--batch-size", "2", "--max-eval-samples", "2",
            "--num-beams", "1", "--max-new-tokens", "2", "--report-to", "none"]


@pytest.fixture()
def dataset_folder(tmp_path):
    """A user's dataset: JSON lines and their images."""
    root = tmp_path / "mydata"
    (root / "pages").mkdir(parents=True)
    (root / "pages" / "1.png").write_bytes(builders.png())
    builders.write_jsonl(root / "data.jsonl", [{"image": "pages/1.png", "question": "what", "answers": ["x"]}] * 4)
    return root


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def fake_run(folder, *extra):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("model: tiny\ndataset: synthetic\n")
    (folder / "metrics.jsonl").write_text("")
    (folder / "checkpoint-3").mkdir()
    for name in extra:
        (folder / name).write_text("mine")
    return folder


def test_overwrite_never_deletes_the_dataset_it_trains_on(dataset_folder, capsys):
    before = files_under(dataset_folder)
    code = main(["train", "--dataset", str(dataset_folder), "--output-dir", str(dataset_folder), "--overwrite",
                 *TINY_RUN])
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "input" in err
    assert files_under(dataset_folder) == before


def test_overwrite_never_deletes_the_working_directory(tmp_path, monkeypatch, capsys):
    fake_run(tmp_path / "work")  # even a folder that looks like a run
    monkeypatch.chdir(tmp_path / "work")
    assert main(["train", "--output-dir", ".", "--overwrite", *TINY_RUN]) == 2
    assert "working directory" in capsys.readouterr().err
    assert (tmp_path / "work" / "config.yaml").exists()


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path, capsys):
    folder = fake_run(tmp_path / "run", "notes.txt")
    assert main(["train", "--output-dir", str(folder), "--overwrite", *TINY_RUN]) == 2
    err = capsys.readouterr().err
    assert "not a florence-tune run" in err and "notes.txt" in err
    assert (folder / "notes.txt").read_text() == "mine"
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "thesis.tex").write_text("years of work")
    assert main(["train", "--output-dir", str(plain), "--overwrite", *TINY_RUN]) == 2
    assert (plain / "thesis.tex").exists()


def test_overwrite_never_deletes_the_model_it_starts_from(tmp_path, capsys):
    folder = fake_run(tmp_path / "run")
    shutil.copytree(loading.resolve_model_path("tiny"), folder / "final")
    (folder / "final" / "mine.txt").write_text("the model I fine-tuned last week")
    assert main(["train", "--model", str(folder / "final"), "--output-dir", str(folder), "--overwrite",
                 *TINY_RUN]) == 2
    assert "input" in capsys.readouterr().err and (folder / "final" / "mine.txt").exists()


def test_overwrite_replaces_a_run(tmp_path):
    folder = fake_run(tmp_path / "run")
    assert main(["train", "--output-dir", str(folder), "--overwrite", "--eval-split", "none", *TINY_RUN]) == 0
    assert not (folder / "checkpoint-3").exists() and (folder / "final").is_dir()


def test_convert_overwrite_never_touches_its_source(tmp_path, capsys):
    outer = tmp_path / "outer"
    source = outer / "original"
    source.mkdir(parents=True)
    (source / "config.json").write_text("{}")
    assert main(["convert", str(source), str(outer), "--overwrite"]) == 2
    assert "holds this command's input" in capsys.readouterr().err and (source / "config.json").exists()


def test_evaluate_never_writes_over_its_dataset(dataset_folder, capsys):
    data_file = dataset_folder / "data.jsonl"
    before = data_file.read_text()
    assert main(["evaluate", "--model", "tiny", "--dataset", str(data_file), "--split", "train",
                 "--holdout-rows", "1", "--output", str(data_file)]) == 2
    assert "is an input" in capsys.readouterr().err
    assert main(["evaluate", "--model", "tiny", "--dataset", str(dataset_folder), "--split", "train",
                 "--holdout-rows", "1", "--output", str(dataset_folder / "predictions.jsonl")]) == 2
    assert "inside the dataset folder" in capsys.readouterr().err
    assert data_file.read_text() == before and files_under(dataset_folder) == ["data.jsonl", "pages", "pages/1.png"]


def test_a_write_that_fails_halfway_keeps_the_previous_file(tmp_path, monkeypatch):
    from florence_tune import paths

    target = tmp_path / "summary.json"
    target.write_text('{"good": true}')

    def full_disk(self, text, *args, **kwargs):
        with self.open("w") as handle:  # half the bytes reach the disk, then it is full
            handle.write(text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError):
        paths.write_atomic(target, '{"new": 1}')
    monkeypatch.undo()
    assert target.read_text() == '{"good": true}' and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    paths.write_atomic(target, '{"new": 1}')
    assert target.read_text() == '{"new": 1}'


def test_a_full_disk_while_final_is_written_keeps_the_last_good_state(tmp_path, monkeypatch, capsys):
    """final/ is staged and renamed: a failed save leaves no final/ without weights, and one line says so."""
    from florence_tune.model import loading

    real_save = loading.save

    def save_then_fail(model, processor, directory):
        real_save(model, processor, directory)
        (Path(directory) / "model.safetensors").unlink()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loading, "save", save_then_fail)
    run = tmp_path / "run"
    code = main(["train", "--output-dir", str(run), "--eval-split", "none", *TINY_RUN, "--save-steps", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "final" in err[-1] and "No space left" in err[-1] and "checkpoint-1" in err[-1]
    assert not (run / "final").exists() and (run / "checkpoint-1" / "model.safetensors").exists()
    assert not [p for p in run.iterdir() if "tmp" in p.name]


def test_a_second_run_into_a_folder_in_use_stops_at_once(tmp_path, capsys):
    """One run per folder: the lock names the pid and host holding it; a lock whose process is gone is taken over."""
    import json
    import os
    import socket
    import subprocess
    import sys

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    assert main(["train", "--output-dir", str(run), "--eval-split", "none", *TINY_RUN]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use" in err[0] and str(os.getpid()) in err[0]
    assert [p.name for p in run.iterdir()] == ["run.lock"], "nothing was written by the refused start"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / "run.lock").write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname()}))
    assert main(["train", "--output-dir", str(run), "--eval-split", "none", *TINY_RUN]) == 0
    assert (run / "final").is_dir() and not (run / "run.lock").exists(), "the lock goes when the run ends"


def test_a_run_stopped_before_its_first_checkpoint_is_started_again_but_a_foreign_folder_is_not(tmp_path, capsys):
    started = tmp_path / "started"
    started.mkdir()
    (started / "config.yaml").write_text("model: tiny\n")
    (started / "metrics.jsonl").write_text('{"step": 0, "before_loss": 7.9}\n')
    assert main(["train", "--output-dir", str(started), "--eval-split", "none", *TINY_RUN]) == 0
    assert (started / "final").is_dir() and "before_loss" not in (started / "metrics.jsonl").read_text()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["train", "--output-dir", str(foreign), "--eval-split", "none", *TINY_RUN]) == 2
    assert "holds files that are not a run (notes.txt)" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
