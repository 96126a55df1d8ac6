"""``florence-tune predict`` over many inputs: folders, globs, PDF pages, JSON lines of questions; batched, one JSON
line per image, page or row; bad items counted on their line, bad inputs one line and exit 2 before any model."""

import json

import pytest
from PIL import Image, ImageDraw

from florence_tune.cli import main

QUICK = ["--model", "tiny", "--num-beams", "1", "--max-new-tokens", "4"]


def page(colour, text="TOTAL"):
    image = Image.new("RGB", (240, 320), colour)
    ImageDraw.Draw(image).text((20, 20), text, fill=(0, 0, 0))
    return image


def predict_lines(capsys, *argv):
    """The JSON lines predict prints on stdout (no --output), and its exit status."""
    code = main(["predict", *QUICK, *argv])
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines()]


def single_answer(capsys, image, *asked):
    """What today's one-image predict prints for ``image`` (text, or the JSON of a task's boxes)."""
    assert main(["predict", *QUICK, "--image", str(image), *asked]) == 0
    return capsys.readouterr().out.removesuffix("\n")


@pytest.fixture()
def scans(tmp_path):
    """scans/a.png, scans/b.png, scans/deeper/c.jpg and a file that is no image."""
    folder = tmp_path / "scans"
    (folder / "deeper").mkdir(parents=True)
    page((235, 150, 150)).save(folder / "a.png")
    page((150, 235, 150), "DATE").save(folder / "b.png")
    page((150, 150, 235), "NAME").save(folder / "deeper" / "c.jpg", quality=95)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_a_folder_gives_one_line_per_image_sorted_recursively_each_as_predict_answers_it(scans, capsys):
    code, lines = predict_lines(capsys, "--image", str(scans), "--question", "Total?")
    assert code == 0
    found = [scans / "a.png", scans / "b.png", scans / "deeper" / "c.jpg"]
    assert [line["image"] for line in lines] == [str(path) for path in found]
    assert all(line["page"] is None and line["question"] == "Total?" and "error" not in line for line in lines)
    assert [line["answer"] for line in lines] == [single_answer(capsys, p, "--question", "Total?") for p in found]


def test_a_glob_reads_the_files_it_matches(scans, capsys):
    code, lines = predict_lines(capsys, "--image", str(scans / "*.png"), "--task", "<CAPTION>")
    assert code == 0
    assert [line["image"] for line in lines] == [str(scans / "a.png"), str(scans / "b.png")]
    assert all(line["task"] == "<CAPTION>" and "question" not in line for line in lines)
    assert [line["answer"] for line in lines] == [single_answer(capsys, scans / n, "--task", "<CAPTION>")
                                                  for n in ("a.png", "b.png")]


def test_each_pdf_page_is_answered_as_predict_answers_the_rendered_page(tmp_path, capsys):
    import pypdfium2

    from florence_tune.config import PredictConfig

    pdf = tmp_path / "doc.pdf"
    page((235, 150, 150)).save(pdf, "PDF", save_all=True, append_images=[page((40, 40, 200), "DATE")],
                               resolution=72)
    code, lines = predict_lines(capsys, "--image", str(pdf), "--question", "Total?")
    assert code == 0
    assert [(line["image"], line["page"]) for line in lines] == [(str(pdf), 1), (str(pdf), 2)]
    assert 1500 <= PredictConfig.pdf_dpi * 11 and PredictConfig.pdf_dpi * 11.7 <= 2500, "Letter and A4 pages"
    document = pypdfium2.PdfDocument(str(pdf))
    rendered = []
    for number in range(2):
        image = document[number].render(scale=PredictConfig.pdf_dpi / 72).to_pil()
        assert image.size == (round(240 / 72 * PredictConfig.pdf_dpi), round(320 / 72 * PredictConfig.pdf_dpi))
        rendered.append(tmp_path / f"page{number + 1}.png")
        image.save(rendered[-1])
    document.close()
    assert [line["answer"] for line in lines] == [single_answer(capsys, p, "--question", "Total?") for p in rendered]


def test_json_lines_carry_their_own_questions_and_tasks_paths_relative_to_the_file(scans, tmp_path, capsys):
    (tmp_path / "outside.png").write_bytes((scans / "a.png").read_bytes())
    rows = scans / "questions.jsonl"
    rows.write_text("\n".join([
        json.dumps({"image": "a.png", "question": "What is the total?"}),
        json.dumps({"image": "deeper/c.jpg", "task": "<OD>"}),
        json.dumps({"image": "b.png", "question": "Date?"}),
        json.dumps({"image": "../outside.png", "question": "Total?"}),
        "{not json",
        json.dumps({"image": "a.png"}),
    ]) + "\n")
    code, lines = predict_lines(capsys, "--image", str(rows), "--batch-size", "2")
    assert code == 0
    assert [line["image"] for line in lines] == ["a.png", "deeper/c.jpg", "b.png", "../outside.png", None, "a.png"]
    assert lines[0]["answer"] == single_answer(capsys, scans / "a.png", "--question", "What is the total?")
    assert lines[2]["answer"] == single_answer(capsys, scans / "b.png", "--question", "Date?")
    boxes = json.loads(single_answer(capsys, scans / "deeper" / "c.jpg", "--task", "<OD>"))
    assert lines[1]["task"] == "<OD>" and "answer" not in lines[1]
    assert (lines[1]["boxes"], lines[1]["labels"]) == (boxes["bboxes"], boxes["labels"])
    assert [line.get("error") for line in lines] == [None, None, None, "path_outside_dataset", "bad_json_line",
                                                     "no_question"]


def test_a_corrupt_image_among_good_ones_is_a_counted_skip_on_its_line(scans, tmp_path, capsys):
    whole = (scans / "a.png").read_bytes()
    (scans / "broken.png").write_bytes(whole[: len(whole) // 2])  # a PNG cut off halfway
    output = tmp_path / "preds.jsonl"
    assert main(["predict", *QUICK, "--image", str(scans), "--question", "Total?", "--output", str(output)]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["image"].rpartition("/")[2] for line in lines] == ["a.png", "b.png", "broken.png", "c.jpg"]
    assert lines[2]["error"] == "image_corrupt" and "answer" not in lines[2]
    assert all(isinstance(line["answer"], str) for i, line in enumerate(lines) if i != 2)
    assert summary["answered"] == 3 and summary["skipped"] == {"image_corrupt": 1}
    assert summary["output"] == str(output)


def test_a_batch_of_two_answers_as_one_at_a_time(scans, capsys):
    one = predict_lines(capsys, "--image", str(scans), "--question", "Total?", "--batch-size", "1")
    two = predict_lines(capsys, "--image", str(scans), "--question", "Total?", "--batch-size", "2")
    assert one == two and len(one[1]) == 3


def test_one_image_with_output_writes_one_line(scans, tmp_path, capsys):
    output = tmp_path / "one.jsonl"
    assert main(["predict", *QUICK, "--image", str(scans / "a.png"), "--question", "Total?",
                 "--output", str(output)]) == 0
    capsys.readouterr()
    (line,) = [json.loads(text) for text in output.read_text().splitlines()]
    assert line == {"image": str(scans / "a.png"), "page": None, "question": "Total?",
                    "answer": single_answer(capsys, scans / "a.png", "--question", "Total?")}


def empty_folder(tmp):
    (tmp / "empty").mkdir()
    (tmp / "empty" / "notes.txt").write_text("no image here")
    return tmp / "empty", []


def glob_matching_nothing(tmp):
    return tmp / "nothing" / "*.jpg", []


def unopenable_pdf(tmp):
    (tmp / "bad.pdf").write_bytes(b"%PDF-1.4 not really a PDF")
    return tmp / "bad.pdf", []


def output_inside_the_input_folder(tmp):
    (tmp / "in").mkdir()
    page((1, 2, 3)).save(tmp / "in" / "a.png")
    return tmp / "in", ["--output", str(tmp / "in" / "preds.jsonl")]


def rows_and_a_question_flag(tmp):
    (tmp / "q.jsonl").write_text('{"image": "a.png", "question": "q"}\n')
    return tmp / "q.jsonl", []


@pytest.mark.parametrize(
    ("make", "message"),
    [(empty_folder, "holds no image"), (glob_matching_nothing, "matches no image"),
     (unopenable_pdf, "cannot open PDF"), (output_inside_the_input_folder, "inside"),
     (rows_and_a_question_flag, "carry their own")],
    ids=lambda value: value.__name__ if callable(value) else value,
)
def test_bad_input_is_one_line_and_exit_2_before_the_model_loads(make, message, tmp_path, monkeypatch, capsys):
    from florence_tune.model import loading

    monkeypatch.setattr(loading, "load", lambda *a, **k: pytest.fail("the model loaded before the input was checked"))
    spec, extra = make(tmp_path)
    argv = ["predict", *QUICK, "--image", str(spec), "--question", "Total?", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
