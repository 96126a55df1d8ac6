"""The contact sheet is written in the format its file name asks for."""

import pytest
from PIL import Image

from florence_tune.cli import main
from florence_tune.data.sample import Sample
from florence_tune.errors import UsageError
from florence_tune.reporting import sheet


@pytest.fixture()
def cards(page_image):
    return [sheet.Card.of(Sample("1", page_image, "<VQA>What is the total?", "$12.50",
                                 meta={"question": "What is the total?"}))]


@pytest.mark.parametrize(("name", "expected"), [("s.png", "PNG"), ("s.jpg", "JPEG"), ("s.JPEG", "JPEG"),
                                                ("s.webp", "WEBP")])
def test_the_suffix_names_the_format(cards, tmp_path, name, expected):
    path = sheet.draw(cards, "title", tmp_path / name)
    with Image.open(path) as written:
        assert written.format == expected


@pytest.mark.parametrize("name", ["sheet.xyz", "sheet"])
def test_a_suffix_that_is_no_image_format_is_refused_in_one_line(cards, tmp_path, name):
    with pytest.raises(UsageError, match=f"--sheet '.*{name}'") as error:
        sheet.draw(cards, "title", tmp_path / name)
    assert "\n" not in str(error.value) and ".png" in str(error.value)
    assert not (tmp_path / name).exists()


def test_inspect_writes_a_jpeg_sheet(tmp_path, capsys):
    assert main(["data", "inspect", "synthetic", "--max-samples", "2", "--sheet", str(tmp_path / "s.jpg")]) == 0
    with Image.open(tmp_path / "s.jpg") as written:
        assert written.format == "JPEG"
    assert main(["data", "inspect", "synthetic", "--max-samples", "2", "--sheet", str(tmp_path / "s.pgn")]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # after the pass's progress bars
    assert err[-1].startswith("florence-tune data inspect: error: --sheet '") and "Traceback" not in err, err
