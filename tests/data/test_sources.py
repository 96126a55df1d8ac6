"""Every adapter through the real loaders (load_dataset on hub-layout copies, load_from_disk), map-style
and streamed: DocVQA, the Cauldron (turns, multi-image rows, held-out validation), Docmatix, local data."""

import collections

import builders
import datasets
import pytest

from conftest import CAULDRON_SIZES, DOCVQA_SIZES
from florence_tune import data
from florence_tune.data import Sample, SampleDataset, SampleStream, Skipped
from florence_tune.errors import UsageError


def items(dataset) -> list:
    return list(dataset) if isinstance(dataset, SampleStream) else [dataset[i] for i in range(len(dataset))]


def ids(dataset) -> list[str]:
    return [item.id for item in items(dataset)]


# --- DocVQA -------------------------------------------------------------------------------------------


def test_docvqa_rows_become_samples(hub):
    train = data.load("docvqa", "train")
    assert isinstance(train, SampleDataset) and len(train) == DOCVQA_SIZES["train"]
    sample = train[3]
    assert sample.prompt == "<VQA>what is written in box 3" and sample.target == "value 3"
    assert sample.references == ["value 3", "val 3"] and sample.meta["question_type"] == "form"
    assert sample.image.mode == "RGB" and sample.id == "1003"
    assert data.load("docvqa", "train", clean_questions=True)[3].prompt == "<VQA>What is written in box 3?"


def test_docvqa_test_split_is_predict_only(hub):
    assert data.predict_only("docvqa", "test") and not data.predict_only("docvqa", "validation")
    test = data.load("docvqa", "test")
    assert test.predict_only and len(test) == DOCVQA_SIZES["test"]
    assert all(isinstance(s, Sample) and s.references == [] for s in items(test))


def test_docvqa_streamed_gives_the_same_samples(hub):
    for split in DOCVQA_SIZES:
        streamed = data.load("docvqa", split, streaming=True)
        assert isinstance(streamed, SampleStream)
        assert sorted(ids(streamed)) == sorted(ids(data.load("docvqa", split)))


# --- the Cauldron and Docmatix ---------------------------------------------------------------------------


def expected_turns(count: int, first: int = 0) -> int:
    return sum(builders.turns_of(i) for i in range(first, count))


@pytest.mark.parametrize("streaming", [False, True])
def test_every_cauldron_turn_is_a_sample_and_validation_is_held_out(hub, streaming):
    train = data.load("cauldron:ai2d,chartqa", "train", streaming=streaming, holdout_rows=2)
    validation = data.load("cauldron:ai2d,chartqa", "validation", streaming=streaming, holdout_rows=2)
    train_ids, validation_ids = ids(train), ids(validation)
    assert len(train_ids) == sum(expected_turns(n, first=2) for n in CAULDRON_SIZES.values())
    assert len(validation_ids) == sum(expected_turns(2) for _ in CAULDRON_SIZES)
    assert not set(train_ids) & set(validation_ids), "held-out rows leak into training"
    assert len(set(train_ids)) == len(train_ids)
    sample = next(s for s in items(validation) if s.id.startswith("chartqa/"))
    assert sample.prompt.startswith("<VQA>chartqa question 0.") and sample.target.startswith("chartqa answer 0.")
    assert sample.meta["question_type"] == "chartqa"


def test_held_out_slice_is_the_same_streamed_or_not(hub):
    for split in ("train", "validation"):
        mapped = ids(data.load("cauldron", split, holdout_rows=3))
        streamed = ids(data.load("cauldron", split, holdout_rows=3, streaming=True))
        assert sorted(mapped) == sorted(streamed)


def test_multi_image_rows_are_tiled_or_skipped_and_counted(hub):
    tiled = [s for s in items(data.load("cauldron:ai2d", "train", holdout_rows=0)) if s.meta.get("altered")]
    multi_rows = [i for i in range(CAULDRON_SIZES["ai2d"]) if builders.images_of(i) > 1]
    assert len(tiled) == sum(builders.turns_of(i) for i in multi_rows)
    assert all(s.meta["altered"] == ["tiled_images"] for s in tiled)
    assert tiled[0].image.width >= 40 + 48, "both pages are on the sheet"
    skipped = items(data.load("cauldron:ai2d", "train", holdout_rows=0, multi_image="skip"))
    assert collections.Counter(s.reason for s in skipped if isinstance(s, Skipped)) == {"multi_image": len(tiled)}


def test_docmatix_has_the_cauldron_schema(hub):
    train = data.load("docmatix", "validation", holdout_rows=2)
    assert len(train) == expected_turns(2)
    assert train[0].prompt == "<VQA>docmatix question 0.0"


def test_a_local_copy_with_configurations(hub):
    folder = hub["cauldron"]
    assert len(data.load(f"{folder}:chartqa", "train", holdout_rows=0)) == expected_turns(CAULDRON_SIZES["chartqa"])
    assert len(data.load(str(folder), "train", holdout_rows=0)) == sum(map(expected_turns, CAULDRON_SIZES.values()))


# --- the user's own data ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    for name in ("a.png", "b.png"):
        (root / "train" / "images").mkdir(parents=True, exist_ok=True)
        (root / "train" / "images" / name).write_bytes(builders.png())
    builders.write_jsonl(root / "train" / "annotations.jsonl", [
        {"image": "images/a.png", "prefix": "<VQA>What is the total?", "suffix": "$12.50"},
        {"image": "images/b.png", "question": "what is the date", "answers": ["4 May", "May 4"]},
        {"image": "images/b.png", "question": "who signed", "answer": "Ann"},
        {"image": "images/a.png", "prefix": "Describe the page", "suffix": "a red page"},
    ])
    (root / "valid").mkdir()
    (root / "valid" / "page.png").write_bytes(builders.png())
    builders.write_jsonl(root / "valid" / "annotations.jsonl",
                         [{"image": "page.png", "prefix": "<OCR>", "suffix": "x"}])
    return root


def test_maestro_jsonl_folder(own_data):
    train = data.load(str(own_data), "train")
    prompts = [(s.prompt, s.target, s.references) for s in items(train)]
    assert prompts == [("<VQA>What is the total?", "$12.50", ["$12.50"]),
                       ("<VQA>what is the date", "4 May", ["4 May", "May 4"]),
                       ("<VQA>who signed", "Ann", ["Ann"]),
                       ("<VQA>Describe the page", "a red page", ["a red page"])]
    validation = data.load(str(own_data), "validation")  # the valid/ folder
    assert [s.prompt for s in items(validation)] == ["<OCR>"]
    single = data.load(str(own_data / "train" / "annotations.jsonl"), "train", holdout_rows=1)
    assert len(single) == 3, "a single file is the train split, less the held-out rows"
    streamed = data.load(str(own_data), "train", streaming=True, clean_questions=True)
    assert [s.prompt for s in items(streamed)][1] == "<VQA>What is the date?"


def test_parquet_files_and_save_to_disk(tmp_path):
    rows = builders.docvqa_rows("train", 5)
    table = datasets.Dataset.from_list(rows, features=builders.DOCVQA_FEATURES)
    table.to_parquet(str(tmp_path / "pages.parquet"))
    assert len(data.load(str(tmp_path / "pages.parquet"), "train", holdout_rows=0)) == 5
    datasets.DatasetDict({"train": table, "validation": table.select(range(2))}).save_to_disk(str(tmp_path / "dict"))
    assert len(data.load(str(tmp_path / "dict"), "validation")) == 2
    assert len(data.load(str(tmp_path / "dict"), "train")) == 5, "a real validation split: nothing held out"
    cauldron = datasets.Dataset.from_list(builders.cauldron_rows("mine", 4), features=builders.CAULDRON_FEATURES)
    cauldron.save_to_disk(str(tmp_path / "single"))
    assert len(data.load(str(tmp_path / "single"), "train", holdout_rows=1)) == expected_turns(4, first=1)
    assert len(data.load(str(tmp_path / "single"), "validation", holdout_rows=1, streaming=True).components) == 1


def test_unusable_sources_are_one_line_usage_errors(hub, tmp_path):
    with pytest.raises(UsageError, match="has no split 'nope'"):
        data.load("docvqa", "nope")
    datasets.Dataset.from_list([{"x": 1}]).save_to_disk(str(tmp_path / "odd"))
    with pytest.raises(UsageError, match="has columns"):
        data.load(str(tmp_path / "odd"), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no JSON lines"):
        data.load(str(tmp_path / "empty"), "train")


def test_a_copied_dataset_is_read_from_its_own_files(tmp_path, monkeypatch):
    """cp -a, tar and rsync keep sizes and mtimes: a copy elsewhere must still be read from its own files."""
    for place, colour in (("a", (200, 30, 30)), ("b", (10, 200, 10))):
        root = tmp_path / place / "mydata"
        (root / "pages").mkdir(parents=True)
        builders.write_jsonl(root / "data.jsonl", [{"image": "pages/1.png", "question": "q", "answers": ["x"]}] * 3)
        (root / "pages" / "1.png").write_bytes(builders.png(colour))
    import os
    import shutil

    stamp = os.stat(tmp_path / "a" / "mydata" / "data.jsonl")
    os.utime(tmp_path / "b" / "mydata" / "data.jsonl", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    monkeypatch.chdir(tmp_path / "a")
    assert data.load("mydata", "train", holdout_rows=0)[0].image.getpixel((0, 0)) == (200, 30, 30)
    shutil.rmtree(tmp_path / "a" / "mydata")
    monkeypatch.chdir(tmp_path / "b")  # the same relative path, size and mtime: only the content differs
    copy = data.load("mydata", "train", holdout_rows=0)
    assert copy[0].image.getpixel((0, 0)) == (10, 200, 10)


def test_an_edited_jsonl_file_is_read_again(tmp_path):
    """An edit that keeps the size and the modification time (a restored backup, a fixed typo) is seen."""
    import os

    file = builders.write_jsonl(tmp_path / "d.jsonl", [{"image": "1.png", "question": "q", "answers": ["abc"]}])
    (tmp_path / "1.png").write_bytes(builders.png())
    stamp = os.stat(file)
    assert data.load(str(file), "train", holdout_rows=0)[0].target == "abc"
    builders.write_jsonl(file, [{"image": "1.png", "question": "q", "answers": ["xyz"]}])
    os.utime(file, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert data.load(str(file), "train", holdout_rows=0)[0].target == "xyz"


# --- what a folder holds, and where its paths point -----------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True])
def test_image_paths_in_parquet_and_saved_rows_are_read_against_the_dataset_folder(tmp_path, monkeypatch,
                                                                                     streaming):
    root = tmp_path / "data"
    (root / "pages").mkdir(parents=True)
    (root / "pages" / "a.png").write_bytes(builders.png((10, 200, 10)))
    (tmp_path / "outside.png").write_bytes(builders.png())
    rows = [{"image": "pages/a.png", "question": "q", "answers": ["x"]},
            {"image": "../outside.png", "question": "q", "answers": ["y"]}]
    datasets.Dataset.from_list(rows).to_parquet(str(root / "train.parquet"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # relative to the dataset, never to the shell's directory
    for spec in (str(root / "train.parquet"), str(root)):
        found = items(data.load(spec, "train", holdout_rows=0, streaming=streaming))
        assert found[0].image.getpixel((0, 0)) == (10, 200, 10)
        assert found[1] == Skipped("path_outside_dataset")
    monkeypatch.chdir(root)
    assert len(data.load(".", "train", holdout_rows=0)) == 2, "the folder given as '.'"
    saved = datasets.Dataset.from_list(rows)
    saved.save_to_disk(str(root / "saved"))
    (root / "saved" / "pages").mkdir()
    (root / "saved" / "pages" / "a.png").write_bytes(builders.png((10, 200, 10)))
    monkeypatch.chdir(tmp_path / "elsewhere")
    found = items(data.load(str(root / "saved"), "train", holdout_rows=0, streaming=streaming))
    assert found[0].image.getpixel((0, 0)) == (10, 200, 10) and found[1] == Skipped("path_outside_dataset")


def test_a_split_key_splits_question_lines_too(tmp_path):
    (tmp_path / "p.png").write_bytes(builders.png())
    lines = [{"image": "p.png", "question": f"q{i}", "answers": ["a"], **({"split": "validation"} if i % 4 == 0
                                                                           else {})} for i in range(8)]
    file = builders.write_jsonl(tmp_path / "rows.jsonl", lines)
    for streaming in (False, True):
        train = [s.meta["question"] for s in items(data.load(str(file), "train", streaming=streaming))]
        validation = [s.meta["question"] for s in items(data.load(str(file), "validation", streaming=streaming))]
        assert (train, validation) == (["q1", "q2", "q3", "q5", "q6", "q7"], ["q0", "q4"]), streaming


def test_a_folder_source_reads_data_files_not_runs_or_model_files(tmp_path):
    (tmp_path / "p.png").write_bytes(builders.png())
    builders.write_jsonl(tmp_path / "train.jsonl", [{"image": "p.png", "question": "q", "answers": ["a"]}] * 3)
    run = tmp_path / "runs" / "first"  # a run saved inside the dataset folder
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text("dataset: .\n")
    builders.write_jsonl(run / "metrics.jsonl", [{"step": i, "loss": 1.0} for i in range(50)])
    builders.write_jsonl(run / "predictions.jsonl", [{"id": "x", "prediction": "a"}])
    for name in ("config.json", "tokenizer.json", "generation_config.json"):
        (run / "final" / name).write_text('{"a": 1}')
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "florence2"}')
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert len(data.load(str(tmp_path), "train", holdout_rows=0)) == 3


def test_a_json_file_of_no_known_form_says_what_was_tried(tmp_path):
    for name, text in (("dict.json", '{"foo": 1}'), ("list.json", "[1, 2, 3]"), ("words.json", "not json at all")):
        (tmp_path / name).write_text(text)
        with pytest.raises(UsageError, match="neither a COCO detection file .* nor JSON lines"):
            data.load(str(tmp_path / name), "train")


@pytest.mark.parametrize("streaming", [False, True])
def test_a_small_source_without_validation_lends_a_tenth_of_its_rows(tmp_path, streaming, caplog):
    (tmp_path / "p.png").write_bytes(builders.png())
    file = builders.write_jsonl(tmp_path / "rows.jsonl",
                                [{"image": "p.png", "question": f"q{i}", "answers": ["a"]} for i in range(16)])
    train = items(data.load(str(file), "train", streaming=streaming))  # --holdout-rows 100 by default
    validation = items(data.load(str(file), "validation", streaming=streaming))
    assert [s.meta["question"] for s in validation] == ["q0"]
    assert [s.meta["question"] for s in train] == [f"q{i}" for i in range(1, 16)]
    assert "1 of its 16 rows" in caplog.text
    big = builders.write_jsonl(tmp_path / "big.jsonl",
                               [{"image": "p.png", "question": f"q{i}", "answers": ["a"]} for i in range(300)])
    assert len(data.load(str(big), "validation", streaming=False)) == 100, "a big source lends --holdout-rows"
    with pytest.raises(UsageError, match="with --holdout-rows above 0 it lends rows .* --eval-split none"):
        data.load(str(file), "validation", holdout_rows=0)
    single = builders.write_jsonl(tmp_path / "one.jsonl", [{"image": "p.png", "question": "q", "answers": ["a"]}])
    with pytest.raises(UsageError, match="has no rows .*--holdout-rows"):  # its one row went to validation
        data.check_usable(data.load(str(single), "train", streaming=True, holdout_rows=100), "train")


def test_clean_questions_cases_them_as_the_original_scripts_did():
    from florence_tune.data.adapters.docvqa import clean_question

    # str.capitalize when the first letter is small (the rest lower-cased), then a question mark
    assert clean_question("what is the ID of FORM A") == "What is the id of form a?"
    assert clean_question("ABC total") == "ABC total?" and clean_question("Where is it?") == "Where is it?"
    assert clean_question("  ") == ""
