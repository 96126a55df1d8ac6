"""Region and structured-output metrics on hand-made records: masks, text lines with quadrilaterals, proposals, JSON.

Every expected value is worked out by hand in a comment beside it. Squares sit on whole pixels, where pycocotools'
rasterisation covers exactly their area, so IoUs of squares are exact fractions.
"""

import pytest

from florence_tune.evaluation import region_metrics


def square(x0, y0, x1, y1):
    """The polygon (or quadrilateral) of an axis-aligned rectangle, clockwise from its top-left corner."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def masks(reference, predicted, size=(100, 100)):
    """A segmentation record; each object is (label, [polygon, …])."""
    return {"image_size": list(size),
            "reference_polygons": [p for _, p in reference], "reference_labels": [label for label, _ in reference],
            "predicted_polygons": [p for _, p in predicted], "predicted_labels": [label for label, _ in predicted]}


def lines(reference, predicted, size=(200, 100)):
    """An OCR-with-region record; each line is (text, quadrilateral)."""
    return {"image_size": list(size),
            "reference_quads": [q for _, q in reference], "reference_labels": [t for t, _ in reference],
            "predicted_quads": [q for _, q in predicted], "predicted_labels": [t for t, _ in predicted]}


def proposals(reference, predicted, size=(100, 100), labels=None):
    record = {"image_size": list(size), "reference_boxes": reference, "predicted_boxes": predicted}
    if labels:
        record.update(reference_labels=[labels[0]] * len(reference), predicted_labels=[labels[1]] * len(predicted))
    return record


def extraction(prediction, reference):
    return {"prediction": prediction, "references": [reference]}


# --- segmentation -------------------------------------------------------------------------------


def test_perfect_masks_score_one():
    record = masks([("cup", [square(0, 0, 10, 10)]), ("plate", [square(20, 20, 40, 30)])],
                   [("plate", [square(20, 20, 40, 30)]), ("cup", [square(0, 0, 10, 10)])])
    assert region_metrics.segmentation_scores([record]) == {
        "mask_map": pytest.approx(1.0), "mask_map_50": pytest.approx(1.0), "mean_iou": pytest.approx(1.0)}


def test_a_shifted_square_has_its_iou_and_no_match_below_one_half():
    # 10×10 squares, the prediction 5 px to the right: overlap 5×10 = 50, union 100 + 100 - 50 = 150 → IoU 1/3
    shifted = masks([("", [square(0, 0, 10, 10)])], [("", [square(5, 0, 15, 10)])])
    scores = region_metrics.segmentation_scores([shifted])
    assert scores["mean_iou"] == pytest.approx(1 / 3, abs=1e-6)
    assert scores["mask_map_50"] == 0.0 and scores["mask_map"] == 0.0  # 1/3 < 0.5: the only prediction is a miss
    # mean_iou is a mean over images: (1 + 1/3) / 2 = 2/3
    perfect = masks([("", [square(0, 0, 10, 10)])], [("", [square(0, 0, 10, 10)])])
    assert region_metrics.segmentation_scores([perfect, shifted])["mean_iou"] == pytest.approx(2 / 3, abs=1e-6)


def test_an_objects_polygons_are_one_mask_and_mean_iou_takes_the_union_of_objects():
    # One object of two pieces: 10×10 (100 px) + 20×10 (200 px) = 300 px. Predicting only the big piece: IoU 200/300
    # = 2/3, matched at the thresholds .50 .55 .60 .65 and missed at .70 … .95 → mAP@.5 = 1, mAP = 4/10.
    # (Were each polygon an object, the big piece would match one of two at IoU 1: AP 51/101 at every threshold.)
    record = masks([("", [square(0, 0, 10, 10), square(20, 0, 40, 10)])], [("", [square(20, 0, 40, 10)])])
    scores = region_metrics.segmentation_scores([record])
    assert scores["mask_map_50"] == pytest.approx(1.0) and scores["mask_map"] == pytest.approx(0.4)
    assert scores["mean_iou"] == pytest.approx(2 / 3, abs=1e-6)
    # Two reference objects (100 + 100 px) against one predicted strip over both (30×10 = 300 px): the union of
    # references (200 px) lies inside it → IoU 200 / 300 = 2/3, whatever the per-object matching.
    strip = masks([("", [square(0, 0, 10, 10)]), ("", [square(20, 0, 30, 10)])], [("", [square(0, 0, 30, 10)])])
    assert region_metrics.segmentation_scores([strip])["mean_iou"] == pytest.approx(2 / 3, abs=1e-6)


def test_a_missing_prediction_and_a_two_point_polygon_score_zero():
    reference = [("", [square(0, 0, 10, 10)])]
    assert region_metrics.segmentation_scores([masks(reference, [])]) == {
        "mask_map": 0.0, "mask_map_50": 0.0, "mean_iou": 0.0}
    # [0, 0, 10, 10] is two points and is dropped; pycocotools alone would read it as the box x=0 y=0 w=10 h=10,
    # the very reference square, and score 1.0.
    two_points = masks(reference, [("", [[0, 0, 10, 10]])])
    assert region_metrics.segmentation_scores([two_points]) == {"mask_map": 0.0, "mask_map_50": 0.0, "mean_iou": 0.0}
    # nothing to score without a reference object
    assert region_metrics.segmentation_scores([masks([], [("", [square(0, 0, 10, 10)])])]) == {
        "mask_map": None, "mask_map_50": None, "mean_iou": None}


def test_mask_map_is_one_coco_evaluation_over_the_whole_set(capsys):
    # A: one reference; a miss generated first, then a hit. B: two references; one hit.
    a = masks([("", [square(0, 0, 50, 50)])], [("", [square(60, 60, 90, 90)]), ("", [square(0, 0, 50, 50)])])
    b = masks([("", [square(0, 0, 50, 50)]), ("", [square(50, 50, 100, 100)])], [("", [square(0, 0, 50, 50)])])
    # Whole set, all scores 1.0 in generation order: miss, hit, hit over 3 references → precision 0, 1/2, 2/3 at
    # recall 0, 1/3, 2/3; interpolated precision 2/3 at the 67 recall points 0.00 … 0.66, 0 above → 67·(2/3)/101.
    # Hits are exact masks, so every IoU threshold gives the same AP and mask_map = mask_map_50.
    whole = 67 * (2 / 3) / 101  # ≈ 0.4422
    # Per record: A = 0.5 at all 101 recall points (precision 1/2 reaching recall 1); B = 51/101 (precision 1 up to
    # recall 1/2) → their mean ≈ 0.5025, not the whole-set number.
    per_record = (0.5 + 51 / 101) / 2
    scores = region_metrics.segmentation_scores([a, b])
    assert scores["mask_map_50"] == pytest.approx(whole, abs=1e-6)
    assert scores["mask_map"] == pytest.approx(whole, abs=1e-6)
    assert region_metrics.segmentation_scores([a])["mask_map_50"] == pytest.approx(0.5, abs=1e-6)
    assert region_metrics.segmentation_scores([b])["mask_map_50"] == pytest.approx(51 / 101, abs=1e-6)
    assert abs(scores["mask_map_50"] - per_record) > 0.05
    region_metrics.proposal_recall([proposals([[0, 0, 5, 5]], [[0, 0, 5, 5]])])
    assert capsys.readouterr().out == ""  # pycocotools' progress lines and summary table are kept off stdout


# --- OCR with region ----------------------------------------------------------------------------


def test_exact_lines_score_one_and_no_errors():
    diamond = [20, 40, 40, 60, 20, 80, 0, 60]  # a rotated quadrilateral is matched by its area, not its box
    page = [("TOTAL", square(0, 0, 50, 10)), ("12.50", square(0, 20, 50, 30)), ("PAID", diamond)]
    assert region_metrics.ocr_region_scores([lines(page, list(reversed(page)))]) == {
        "region_precision": 1.0, "region_recall": 1.0, "region_f1": 1.0, "region_cer": 0.0}


def test_the_cer_of_matched_lines_is_over_their_reference_characters():
    reference = [("TOTAL 12.50", square(0, 0, 100, 10)), ("Paid", square(0, 20, 40, 30))]
    predicted = [("TOTAL 12.5O", square(0, 0, 100, 10)), ("Paid", square(0, 20, 40, 30))]
    # one substituted character over 11 + 4 reference characters
    scores = region_metrics.ocr_region_scores([lines(reference, predicted)])
    assert scores["region_cer"] == pytest.approx(1 / 15)
    assert scores["region_precision"] == scores["region_recall"] == scores["region_f1"] == 1.0


def test_missed_and_spurious_lines_are_counted_over_the_whole_set():
    one = lines([("A", square(0, 0, 50, 10)), ("B", square(0, 20, 50, 30))], [("A", square(0, 0, 50, 10))])
    two = lines([("C", square(0, 40, 50, 50))], [("D", square(100, 60, 150, 70))])  # C missed, D spurious
    # matched 1, predicted 2, reference 3 → P = 1/2, R = 1/3, F1 = 2·(1/2)(1/3) / (1/2 + 1/3) = (1/3)/(5/6) = 2/5
    # (a mean of per-record recalls would be (1/2 + 0)/2 = 1/4)
    scores = region_metrics.ocr_region_scores([one, two])
    assert scores["region_precision"] == pytest.approx(1 / 2)
    assert scores["region_recall"] == pytest.approx(1 / 3)
    assert scores["region_f1"] == pytest.approx(2 / 5)
    assert scores["region_cer"] == 0.0  # the one matched line, "A" for "A"


def test_lines_match_at_iou_one_half_and_not_below():
    # reference 40×10 (400 px); 20×10 inside it: IoU 200/400 = 0.5 → matched
    half = lines([("TOTAL", square(0, 0, 40, 10))], [("TOTAL", square(0, 0, 20, 10))])
    assert region_metrics.ocr_region_scores([half])["region_recall"] == 1.0
    # shifted by 20: overlap 200, union 400 + 400 - 200 = 600 → IoU 1/3 → no match, though the text is the same
    apart = lines([("TOTAL", square(0, 0, 40, 10))], [("TOTAL", square(20, 0, 60, 10))])
    assert region_metrics.ocr_region_scores([apart]) == {
        "region_precision": 0.0, "region_recall": 0.0, "region_f1": 0.0, "region_cer": None}


def test_matching_is_one_to_one_and_takes_the_best_overlap_first():
    # Two predictions on one reference (40×10): "TOTL" over 30×10 (IoU 300/400 = 0.75) generated first, then
    # "TOTAL" on the line itself (IoU 1). The better overlap wins; the other is a false positive:
    # P = 1/2, R = 1/1, F1 = 2·1/(2 + 1) = 2/3, CER 0 (generation order would have paired "TOTL": CER 1/5).
    record = lines([("TOTAL", square(0, 0, 40, 10))], [("TOTL", square(0, 0, 30, 10)), ("TOTAL", square(0, 0, 40, 10))])
    assert region_metrics.ocr_region_scores([record]) == {
        "region_precision": 0.5, "region_recall": 1.0, "region_f1": pytest.approx(2 / 3), "region_cer": 0.0}
    assert region_metrics.ocr_region_scores([lines([], [])]) == {
        "region_precision": None, "region_recall": None, "region_f1": None, "region_cer": None}


# --- region proposals ---------------------------------------------------------------------------


def test_proposal_recall_counts_references_found_at_iou_one_half():
    # IoU 100/100 = 1; [20,0,30,5] inside [20,0,30,10]: 50/100 = 0.5 (counts); [40,0,50,4]: 40/100 = 0.4 (does not)
    three = proposals([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]],
                      [[0, 0, 10, 10], [20, 0, 30, 5], [40, 0, 50, 4]])
    assert region_metrics.proposal_recall([three]) == {"recall_50": pytest.approx(2 / 3)}
    # two proposals on one reference find it once: 1 of 2 here, and (2 + 1) / (3 + 2) = 3/5 over both records
    duplicates = proposals([[0, 0, 10, 10], [50, 50, 60, 60]], [[0, 0, 10, 10], [0, 0, 10, 10]])
    assert region_metrics.proposal_recall([duplicates]) == {"recall_50": pytest.approx(1 / 2)}
    assert region_metrics.proposal_recall([three, duplicates]) == {"recall_50": pytest.approx(3 / 5)}


def test_proposal_recall_ignores_labels_and_keeps_every_proposal():
    labelled = proposals([[0, 0, 10, 10]], [[0, 0, 10, 10]], labels=("cat", "dog"))
    assert region_metrics.proposal_recall([labelled]) == {"recall_50": pytest.approx(1.0)}
    # 150 proposals elsewhere before the one on the reference: COCO's default of 100 per image would cut it
    late = proposals([[0, 0, 10, 10]], [[200, 200, 201, 201]] * 150 + [[0, 0, 10, 10]], size=(300, 300))
    assert region_metrics.proposal_recall([late]) == {"recall_50": pytest.approx(1.0)}
    assert region_metrics.proposal_recall([proposals([[0, 0, 10, 10]], [])]) == {"recall_50": 0.0}
    assert region_metrics.proposal_recall([proposals([], [[0, 0, 10, 10]])]) == {"recall_50": None}


# --- structured extraction ----------------------------------------------------------------------


def test_an_exact_object_scores_one():
    text = '{"vendor": "ACME Ltd", "total": 12.5}'
    assert region_metrics.extraction_scores([extraction(text, text)]) == {
        "json_valid": 1.0, "field_precision": 1.0, "field_recall": 1.0, "field_f1": 1.0, "field_anls": 1.0}


def test_invalid_json_has_no_fields_and_lowers_recall():
    reference = '{"vendor": "ACME Ltd", "total": "12.50"}'
    valid = extraction(reference, reference)
    # 2 of 2 predicted fields right, 2 of 4 reference fields found: P = 1, R = 1/2, F1 = 2·2/(2 + 4) = 2/3;
    # ANLS (1 + 1 + 0 + 0)/4 = 1/2
    for broken in ('{"vendor": "ACME Ltd", "total": ', '["ACME Ltd", "12.50"]'):  # not JSON; JSON but no object
        assert region_metrics.extraction_scores([valid, extraction(broken, reference)]) == {
            "json_valid": 0.5, "field_precision": 1.0, "field_recall": 0.5, "field_f1": pytest.approx(2 / 3),
            "field_anls": 0.5}


def test_values_compare_as_normalised_text():
    # case, whitespace runs and NFKC (full-width letters) do not count; numbers and booleans compare as written
    prediction = '{"vendor": "ＡＣＭＥ  Ltd ", "total": 12.50, "paid": "TRUE"}'
    reference = '{"vendor": "acme ltd", "total": "12.50", "paid": true}'
    scores = region_metrics.extraction_scores([extraction(prediction, reference)])
    assert scores["field_precision"] == scores["field_recall"] == scores["field_f1"] == 1.0


def test_nested_and_list_fields_with_a_wrong_value():
    reference = '{"vendor": {"name": "ACME"}, "items": [{"name": "Bolt", "qty": 2}, {"name": "Nut", "qty": 5}]}'
    prediction = ('{"vendor": {"name": "ACME"}, "items": [{"name": "Bolt", "qty": "2"}, {"name": "Nut", "qty": 6}],'
                  ' "date": "2024-01-01"}')
    # reference fields: vendor.name, items[0].name, items[0].qty, items[1].name, items[1].qty (5)
    # predicted: those 5 and date (6); right: all but items[1].qty (6 ≠ 5) and date → 4
    # P = 4/6, R = 4/5, F1 = 2·4/(6 + 5) = 8/11; ANLS per reference field 1, 1, 1, 1, 0 ("6" vs "5": 1 - 1/1) → 4/5
    assert region_metrics.extraction_scores([extraction(prediction, reference)]) == {
        "json_valid": 1.0, "field_precision": pytest.approx(4 / 6), "field_recall": pytest.approx(4 / 5),
        "field_f1": pytest.approx(8 / 11), "field_anls": pytest.approx(4 / 5)}
    # the same value at another path is another field: "name" is not "vendor.name"
    flat = region_metrics.extraction_scores([extraction('{"name": "ACME"}', '{"vendor": {"name": "ACME"}}')])
    assert flat["field_precision"] == 0.0 and flat["field_recall"] == 0.0 and flat["field_anls"] == 0.0


def test_field_anls_of_a_one_character_typo():
    # "Invoise" for "Invoice": 1 edit over 7 characters → 1 - 1/7; the value is wrong for precision and recall
    scores = region_metrics.extraction_scores([extraction('{"title": "Invoise"}', '{"title": "Invoice"}')])
    assert scores["field_anls"] == pytest.approx(1 - 1 / 7)
    assert scores["field_precision"] == 0.0 and scores["field_recall"] == 0.0 and scores["field_f1"] == 0.0
    assert region_metrics.extraction_scores([]) == {
        "json_valid": None, "field_precision": None, "field_recall": None, "field_f1": None, "field_anls": None}
