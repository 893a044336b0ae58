"""JSON-valued CLI options: an object comes back, anything else is refused with the option's name."""

import pytest

from shared.options import json_object


def test_an_object_is_returned_as_a_dict():
    assert json_object('{"lr": 0.01, "model": {"dim": 8}}', "--x-json") == {"lr": 0.01, "model": {"dim": 8}}


@pytest.mark.parametrize(("text", "message"), [("{bad", "--x-json: not JSON (Expecting property name"),
                                               ("[1]", "--x-json: expected a JSON object, got '[1]'"),
                                               ("3", "--x-json: expected a JSON object")])
def test_anything_else_names_the_option_and_the_problem(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        json_object(text, "--x-json")
