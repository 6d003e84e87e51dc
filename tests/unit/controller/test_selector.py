from __future__ import annotations

import pytest

from tinyfleet.controller.errors import InvalidRequest
from tinyfleet.controller.selector import Kind, Selector


@pytest.mark.parametrize("text,kind,values,canonical", [
    ("all", Kind.ALL, (), "all"),
    (" all ", Kind.ALL, (), "all"),
    ("device:pi-1", Kind.DEVICE, ("pi-1",), "device:pi-1"),
    ("device:b,a, c", Kind.DEVICE, ("a", "b", "c"), "device:a,b,c"),
    ("device:a,a", Kind.DEVICE, ("a",), "device:a"),
    ("group:kitchen", Kind.GROUP, ("kitchen",), "group:kitchen"),
    ("tag:site=berlin", Kind.TAG, ("site", "berlin"), "tag:site=berlin"),
    ("tag:release-ring=", Kind.TAG, ("release-ring", ""), "tag:release-ring="),
])
def test_selectors_parse_to_a_canonical_form(text: str, kind: Kind, values: tuple[str, ...], canonical: str) -> None:
    s = Selector.parse(text)
    assert (s.kind, s.values, str(s)) == (kind, values, canonical)
    assert Selector.parse(str(s)) == s


@pytest.mark.parametrize("text,problem", [
    ("", "empty"), (None, "empty"), (3, "empty"),
    ("everything", "is not all"), ("host:pi", "is not all"), ("group", "is not all"),
    ("device:", "must name"), ("device:,", "must name"), ("device:a/b", "may hold only"),
    ("device:" + ",".join(f"d{i}" for i in range(1001)), "must name"),
    ("group:", "group name"), ("group:a b", "group name"), ("group:-x", "group name"),
    ("tag:site", "tag:KEY=VALUE"), ("tag:=x", "tag key"), ("tag:k=a b", "tag value"),
    ("tag:k=" + "x" * 129, "tag value"),
])
def test_bad_selectors_say_what_is_wrong(text: object, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        Selector.parse(text)


@pytest.mark.parametrize("text,device,groups,tags,matches", [
    ("all", "x", (), {}, True),
    ("device:a,b", "b", (), {}, True),
    ("device:a,b", "c", (), {}, False),
    ("group:g", "x", ("f", "g"), {}, True),
    ("group:g", "x", ("f",), {}, False),
    ("tag:site=berlin", "x", (), {"site": "berlin"}, True),
    ("tag:site=berlin", "x", (), {"site": "paris"}, False),
    ("tag:site=berlin", "x", (), {}, False),
])
def test_matching(text: str, device: str, groups: tuple[str, ...], tags: dict[str, str], matches: bool) -> None:
    assert Selector.parse(text).matches(device, groups, tags) is matches
