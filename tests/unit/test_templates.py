import pytest

from dispatcher.errors import InputError
from dispatcher.templates import MissingField, contact_values, parse_template


def test_render_fields_and_literal_brackets():
    t = parse_template("Hi [first_name], your contract expires on [date]. [[ref]]")
    assert t.fields == {"first_name", "date"}
    v = contact_values("Ann Lee", {"date": "2027-01-01"})
    assert t.render(v) == "Hi Ann, your contract expires on 2027-01-01. [ref]"


def test_variables_override_attributes():
    t = parse_template("[date]")
    assert t.render(contact_values(None, {"date": "a"}, {"date": "b"})) == "b"


def test_a_null_variable_is_no_value_and_a_blank_name_fills_nothing():
    assert contact_values(None, {"date": "a"}, {"date": None}) == {"date": "a"}
    assert contact_values("   ", {}) == {}  # used to raise IndexError ("   ".split()[0])
    assert contact_values("Ann Lee", {"first_name": "Annie"})["first_name"] == "Annie"


def test_missing_field():
    with pytest.raises(MissingField) as e:
        parse_template("Hi [name]").render({})
    assert e.value.name == "name"


@pytest.mark.parametrize(
    "src, needle",
    [
        ("", "empty"),
        ("Hi [name", "never closed"),
        ("Hi name]", "no opening"),
        ("Hi [na me!]", "not a field name"),
        ("x" * 1601, "1600"),
    ],
)
def test_malformed_templates_one_line(src, needle):
    with pytest.raises(InputError) as e:
        parse_template(src)
    assert needle in str(e.value) and "\n" not in str(e.value)
