from ledit.demo.report import METRIC, REAL_ROW, conclusion, detector_table, markdown_tables, metric_table

SIZES = ["32x32", "64x64", "32x64"]


def _row(key, label, shape, density, swd):
    return {
        "key": key,
        "label": label,
        "objects": {size: {"shape_precision": p, "density": d} for size, p, d in zip(SIZES, shape, density)},
        "swd": {size: {"mean": s} for size, s in zip(SIZES, swd)},
    }


def _results(ledit_at_64=(0.85, 3.0, 25.0)):
    shape, density, swd = ledit_at_64
    return {
        "sizes": SIZES,
        "train_size": "32x32",
        "config": {"real_images": 256},
        "reference_objects": {size: {"density": 3.0} for size in SIZES},
        "detector_check": {"blurred": {size: {"shape_precision": 0.1, "density": 2.9} for size in SIZES}},
        "rows": [
            _row(REAL_ROW, "real", [1.0, 1.0, 1.0], [3.1, 2.9, 3.0], [5.0, 4.0, 4.5]),
            _row("ledit", "LEDiT", [0.9, shape, 0.88], [3.0, density, 2.9], [20.0, swd, 30.0]),
            _row("dit-rope", "RoPE", [0.95, 0.3, 0.5], [3.0, 6.0, 1.0], [18.0, 50.0, 40.0]),
        ],
    }


def test_tables_have_a_column_per_size_and_bold_the_best_model():
    results = _results()
    shape = metric_table(results, METRIC["shape_precision"]).splitlines()
    assert shape[0] == "| model | 32x32 (train) | 64x64 | 32x64 |"
    assert shape[2] == "| real | 1.00 | 1.00 | 1.00 |"  # the real images are never bolded
    assert shape[3] == "| LEDiT | 0.90 | **0.85** | **0.88** |"
    assert shape[4] == "| RoPE | **0.95** | 0.30 | 0.50 |"
    density = metric_table(results, METRIC["density"]).splitlines()
    assert density[2] == "| real images (256 per size) | 3.00 | 3.00 | 3.00 |"
    assert density[4] == "| LEDiT | **3.00** | **3.00** | **2.90** |"  # closest to the real density wins
    assert "| RoPE | **3.00** | 6.00 | 1.00 |" in density
    swd = metric_table(results, METRIC["swd"]).splitlines()
    assert swd[3] == "| LEDiT | 20.0 | **25.0** | **30.0** |"
    assert all(metric.title in markdown_tables(results) for metric in METRIC.values())
    assert detector_table(results).splitlines()[2:] == ["| as drawn | 1.00 (3.10) | 1.00 (2.90) | 1.00 (3.00) |",
                                                         "| blurred | 0.10 (2.90) | 0.10 (2.90) | 0.10 (2.90) |"]


def test_conclusion_states_the_result_either_way():
    text = conclusion(_results())
    assert "At the training size 32x32, LEDiT draws 90% of its whole objects right, 0.90x the real images' 100%" in text
    assert "At 64x64 LEDiT keeps both (within 15% of 32x32): shape precision 0.85 (-6%), density 1.00x real" in text
    assert "RoPE: at 64x64 shape precision 0.30 (vs 0.95), 2.00x the real density (too many objects)" in text
    assert "at 32x64 shape precision 0.50 (vs 0.95), 0.33x the real density (too few objects)" in text
    # A baseline winning a column is said, with the numbers.
    assert ("Columns a baseline wins: shape_precision at 32x32 (RoPE 0.95 vs 0.90); swd at 32x32 (RoPE 18.0 vs "
            "20.0)") in text

    lost = conclusion(_results(ledit_at_64=(0.5, 4.5, 60.0)))
    assert "At 64x64 LEDiT does NOT keep its shape precision and its density (within 15% of 32x32)" in lost


def test_conclusion_says_when_nothing_is_drawn_and_names_ties():
    results = _results()
    for row in results["rows"][1:]:
        row["objects"] = {size: {**value, "shape_precision": 0.0} for size, value in row["objects"].items()}
    text = conclusion(results)
    assert "It draws no whole object right at 32x32, so above it only its density can be kept or lost." in text
    assert "At 64x64 LEDiT keeps its density (within 15% of 32x32)" in text
    assert "RoPE: at 64x64 2.00x the real density (too many objects)" in text  # no shape note: nothing to keep
    assert "Columns tied with a baseline: shape_precision at 32x32 (0.00); shape_precision at 64x64 (0.00)" in text


def test_a_lead_the_printed_digits_do_not_show_is_a_tie_not_a_win():
    results = _results(ledit_at_64=(0.301, 3.0, 25.0))
    results["rows"][2]["objects"]["64x64"]["shape_precision"] = 0.304  # RoPE leads at 64x64, but both print 0.30
    text = conclusion(results)
    assert "shape_precision at 64x64" not in text.split("Columns a baseline wins:")[1].split("\n")[0]
    assert "Columns tied with a baseline: shape_precision at 64x64 (0.30)" in text
