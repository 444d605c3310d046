import argparse

import pytest

from ledit import arguments


@pytest.mark.parametrize("kind, text, value", [
    (arguments.positive_int, "3", 3),
    (arguments.nonnegative_int, "0", 0),
    (arguments.seed, str(arguments.MAX_SEED), arguments.MAX_SEED),
    (arguments.finite_float, "-2.5", -2.5),
    (arguments.positive_float, "1e-4", 1e-4),
    (arguments.nonnegative_float, "0", 0.0),
    (arguments.unit_interval, "1", 1.0),
    (arguments.unit_interval, "0.9999", 0.9999),
    (arguments.cfg_scale, "1", 1.0),
    (arguments.cfg_scale, "4.0", 4.0),
    (arguments.device, "cpu", "cpu"),
    (arguments.device, "cuda:3", "cuda:3"),
    (arguments.json_object, '{"scan": "raster"}', {"scan": "raster"}),
    (arguments.file_with_suffix(".png", ".jpg"), "out.JPG", "out.JPG"),
    (arguments.comma_list(("a", "b", "c")), " c, a ,a", ("c", "a")),
    (arguments.one_of(("LEDiT-XL/2", "DiT"), "model"), "DiT", "DiT"),
])
def test_good_values_parse(kind, text, value):
    assert kind(text) == value


@pytest.mark.parametrize("kind, text, message", [
    (arguments.positive_int, "0", "must be a whole number >= 1, got 0"),
    (arguments.positive_int, "-16", "must be a whole number >= 1, got -16"),
    (arguments.positive_int, "2.5", "'2.5' is not an integer"),
    (arguments.nonnegative_int, "-1", ">= 0"),
    (arguments.seed, "-1", r"must be a seed in \[0, 4294967295\]"),
    (arguments.seed, str(2**32), "must be a seed"),
    (arguments.finite_float, "nan", "'nan' is not a finite number"),
    (arguments.finite_float, "inf", "not a finite number"),
    (arguments.positive_float, "0", "must be a number > 0, got 0"),
    (arguments.nonnegative_float, "-1e-4", ">= 0"),
    (arguments.unit_interval, "2", r"must be a number in \[0, 1\], got 2"),
    (arguments.unit_interval, "-0.1", r"in \[0, 1\], got -0.1"),
    (arguments.unit_interval, "nan", "not a finite number"),
    (arguments.cfg_scale, "nan", "not a finite number"),
    (arguments.cfg_scale, "0", r"must be a number >= 1 \(1 = no guidance"),
    (arguments.cfg_scale, "-3", "must be a number >= 1"),
    (arguments.cfg_scale, "0.5", "must be a number >= 1"),
    (arguments.device, "gpu", "not a device: use cpu, cuda or cuda:N"),
    (arguments.device, "cpu:1", "not a device"),
    (arguments.device, "cuda:x", "not a device"),
    (arguments.json_object, "[1,2]", "is a JSON list, not an object of keyword arguments"),
    (arguments.json_object, "{depth: 2}", "is not valid JSON"),
    (arguments.file_with_suffix(".png", ".jpg"), "x.gif", "use .png or .jpg"),
    (arguments.comma_list(("a", "b")), "a,z", "unknown z; choose a comma-separated subset of a,b"),
    (arguments.comma_list(("a", "b")), " , ", "empty"),
    (arguments.one_of(("LEDiT-XL/2", "DiT"), "model"), "LEDiT-XXL/2", "unknown model 'LEDiT-XXL/2'; valid: "),
])
def test_bad_values_are_refused_with_what_to_pass(kind, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        kind(text)


def test_flag_errors_names_the_flags_and_is_a_usage_error():
    with pytest.raises(arguments.UsageError, match="^--model X: bad$") as caught:
        with arguments.flag_errors("--model X", TypeError):
            raise TypeError("bad")
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError keep working
    with pytest.raises(KeyError):  # other errors pass through untouched
        with arguments.flag_errors("--model X", TypeError):
            raise KeyError("k")
