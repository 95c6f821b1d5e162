"""Inline styles after sanitising (issue 15): allowed properties with plain values only."""

from __future__ import annotations

import pytest

from worker.mime import sanitize_html


@pytest.mark.parametrize(
    ("html", "kept", "gone"),
    [
        # CSS escapes decode to `expression(` and `url(` after any check of the text.
        ('<p style="width:\\65xpression(alert(1)); color: red">x</p>', ["color:red"], ["xpression", "alert", "\\"]),
        ('<p style="background-color: u\\72l(https://t.example/p)">x</p>', [], ["t.example", "url(", "style="]),
        ('<p style="width:&#92;65xpression(x)">x</p>', [], ["xpression"]),
        ('<p style="width: exp/**/ression(x); height: 1px">x</p>', ["height:1px"], ["ression"]),
        ('<p style="color: rgb(1, 2, 3); font-family: \'Segoe UI\', Arial">x</p>', ["color:rgb(1, 2, 3)", "Segoe UI"], []),
        ('<p style="border-color: rgb(1,2,3) url(https://t.example/p)">x</p>', [], ["t.example"]),
        ('<p style="background: url(https://t.example/p); margin: -2px 0">x</p>', ["margin:-2px 0"], ["t.example", "background"]),
        ('<p style="behavior: url(x.htc); -moz-binding: url(x)">x</p>', [], ["htc", "binding"]),
        ('<p style="font-size: 12px; position: fixed">x</p>', ["font-size:12px"], ["position"]),
        ('<img src="cid:logo@x" style="width: 10px"><img src="https://t.example/p">', ['src="cid:logo@x"', "width:10px"], ["t.example"]),
    ],
)  # fmt: skip
def test_style_declarations_are_allow_listed(html, kept, gone):
    cleaned = sanitize_html(html)
    for fragment in kept:
        assert fragment in cleaned, cleaned
    for fragment in gone:
        assert fragment not in cleaned, cleaned
