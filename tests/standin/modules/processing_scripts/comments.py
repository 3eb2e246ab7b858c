"""Stand-in of ``modules.processing_scripts.comments``: ``#`` starts a comment that runs to the end of
its line (1.10.1 strips them from the prompts when ``enable_prompt_comments`` is on)."""

from __future__ import annotations


def strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.split("\n"))
