"""shared.http.validation_detail: the one-line 422 detail both services answer with, for each kind of error."""

from shared.http import validation_detail


def test_each_kind_of_error_gets_a_clause_that_says_where_and_what():
    errors = [
        {"type": "greater_than_equal", "loc": ("query", "k"), "msg": "Input should be greater than or equal to 1",
         "input": "0"},
        {"type": "extra_forbidden", "loc": ("query", "limt"), "msg": "Extra inputs are not permitted", "input": "3"},
        {"type": "missing", "loc": ("body", "tokens"), "msg": "Field required", "input": {}},
    ]
    assert validation_detail(errors) == ("query parameter 'k': Input should be greater than or equal to 1 (got '0'); "
                                         "unknown query parameter 'limt'; body parameter 'tokens': Field required")


def test_a_body_that_is_not_json_or_not_an_object_says_so():
    assert validation_detail([{"type": "json_invalid", "loc": ("body", 12), "msg": "JSON decode error",
                               "ctx": {"error": "Expecting value"}}]) == (
        "request body is not valid JSON (Expecting value at character 12); send a JSON object with Content-Type: "
        "application/json")
    assert validation_detail([{"type": "model_attributes_type", "loc": ("body",), "msg": "...", "input": b"x"}]) == (
        "request body: expected a JSON object (Content-Type: application/json), got bytes")
    assert validation_detail([{"type": "missing", "loc": (), "msg": "Field required"}]) == "request: Field required"


def test_pydantics_own_json_errors_and_a_body_that_is_not_an_object():
    assert validation_detail([{"type": "json_invalid", "loc": ("body",), "msg": "Invalid JSON: ...",
                               "ctx": {"error": "expected value at line 1 column 13"}}]) == (
        "request body is not valid JSON (expected value at line 1 column 13); send a JSON object with Content-Type: "
        "application/json")
    assert validation_detail([{"type": "model_type", "loc": ("body",), "msg": "Input should be an object",
                               "input": ["a"]}]) == (
        "request body: expected a JSON object (Content-Type: application/json), got list")


def test_a_long_refused_value_is_quoted_short():
    detail = validation_detail([{"type": "string_too_long", "loc": ("body", "exclude", 0),
                                 "msg": "String should have at most 256 characters", "input": "x" * 100_000}])
    assert detail == ("body parameter 'exclude.0': String should have at most 256 characters (got "
                      f"'{'x' * 39}... (100000 characters))")
