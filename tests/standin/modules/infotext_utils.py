"""Stand-in of ``modules.infotext_utils`` (1.10.1): ``PasteField`` and the infotext parser's shape.

Simplified parser: ``key: value`` pairs of the last line, values with commas may be quoted.
"""

from __future__ import annotations

import json
import re

re_param = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


class PasteField(tuple):
    def __new__(cls, component, target, *, api=None):
        return super().__new__(cls, (component, target))

    def __init__(self, component, target, *, api=None):
        super().__init__()
        self.api = api
        self.component = component
        self.label = target if isinstance(target, str) else None
        self.function = target if callable(target) else None


def unquote(text):
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def quote(text):
    if ',' not in str(text) and '\n' not in str(text) and ':' not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def parse_generation_parameters(x: str, skip_fields: list[str] | None = None):
    res = {}
    lines = x.strip().split("\n")
    lastline = lines[-1] if lines else ""
    for k, v in re_param.findall(lastline):
        res[k.strip()] = unquote(v.strip())
    return res
