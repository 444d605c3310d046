from ledit.demo.report import REAL_ROW, conclusion, markdown_table

SIZES = ["32x32", "64x64", "32x64"]


def _row(key, label, means):
    return {"key": key, "label": label, "swd": {size: {"mean": mean} for size, mean in zip(SIZES, means)}}


def _rows(ledit_at_64):
    return [
        _row(REAL_ROW, "real", [5.0, 4.0, 4.5]),
        _row("ledit", "LEDiT", [20.0, ledit_at_64, 30.0]),
        _row("dit-rope", "RoPE", [18.0, 50.0, 40.0]),
    ]


def test_table_has_a_column_per_size_and_bolds_the_best_model():
    lines = markdown_table(_rows(25.0), SIZES, "32x32").splitlines()
    assert lines[0] == "| model | 32x32 (train) | 64x64 | 32x64 |"
    assert lines[2] == "| real | 5.0 | 4.0 | 4.5 |"  # the real-image floor is never bolded
    assert lines[3] == "| LEDiT | 20.0 | **25.0** | **30.0** |"
    assert lines[4] == "| RoPE | **18.0** | 50.0 | 40.0 |"


def test_conclusion_states_the_result_either_way():
    wins = conclusion(_rows(25.0), SIZES, "32x32")
    assert "LEDiT beats every baseline at 64x64: 25.0 against 50.0 for the best baseline, RoPE (50% lower)" in wins
    assert "At 32x32 (the training size), mean SWD x1e3 (lower is better): RoPE 18.0 < LEDiT 20.0" in wins
    assert "Compare models within a column" in wins

    loses = conclusion(_rows(60.0), SIZES, "32x32")
    assert "LEDiT does NOT beat the best baseline at 64x64: 60.0 against 50.0 for RoPE" in loses
