"""Prompt files (`lmscope.promptfiles`): which files get "Trace" lenses, where each prompt is,
and why a line of a JSONL file gives none."""

from __future__ import annotations

import json

import pytest

from lmscope.promptfiles import (
    PromptSpan,
    is_prompt_file,
    problems_in,
    prompt_file_kind,
    prompts_in,
)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("/home/me/ioi.prompt", "prompt"),
        ("C:\\work\\ioi.prompt", "prompt"),
        ("file:///home/me/ioi.prompt", "prompt"),
        ("file:///c%3A/work/my%20ioi.prompt", "prompt"),
        ("file:///home/me/IOI.PROMPT", "prompt"),
        ("file:///home/me/set.prompts.txt", "lines"),
        ("set.prompts.txt", "lines"),
        ("file:///home/me/set.prompts.jsonl", "jsonl"),
        ("vscode-notebook-cell:/a/set.prompts.jsonl#W1", "jsonl"),
        ("file:///home/me/notes.txt", None),
        ("file:///home/me/data.jsonl", None),
        ("file:///home/me/prompts.txt", None),  # a plain .txt that happens to be named so
        ("file:///home/me/x.prompt.py", None),
        ("file:///home/me/.prompt", None),
        ("file:///home/me.prompt/readme.md", None),
        ("untitled:Untitled-1", None),
        ("", None),
    ],
)
def test_prompt_files_are_told_by_their_name(name, kind):
    assert prompt_file_kind(name) == kind
    assert is_prompt_file(name) is (kind is not None)


def test_a_prompt_file_is_one_prompt_at_line_zero_without_its_final_line_break():
    text = "When Mary and John went to the store,\nJohn gave a drink to\n"
    assert prompts_in(text, "a.prompt") == [
        PromptSpan(0, 0, 37, "When Mary and John went to the store,\nJohn gave a drink to")
    ]


def test_a_prompt_file_keeps_trailing_spaces_and_all_but_one_final_line_break():
    assert prompts_in("The cat \r\n", "a.prompt")[0].prompt == "The cat "
    assert prompts_in("The cat\n\n", "a.prompt")[0].prompt == "The cat\n"
    assert prompts_in("  indented", "a.prompt")[0].prompt == "  indented"


@pytest.mark.parametrize("text", ["", "\n", "   \n\t\n"])
def test_an_empty_prompt_file_has_no_prompt(text):
    assert prompts_in(text, "a.prompt") == []
    assert problems_in(text, "a.prompt") == []


def test_a_byte_order_mark_is_not_part_of_the_prompt():
    assert prompts_in("\ufeffHello", "a.prompt") == [PromptSpan(0, 1, 6, "Hello")]
    assert prompts_in("\ufeffHello\nWorld", "a.prompts.txt")[0] == PromptSpan(0, 1, 6, "Hello")
    assert prompts_in('\ufeff{"prompt": "Hi"}', "a.prompts.jsonl")[0].prompt == "Hi"


def test_a_prompts_txt_file_has_one_prompt_per_line_skipping_blanks_and_comments():
    text = (
        "# IOI prompts\n"
        "When Mary and John went to the store, John gave a drink to\n"
        "\n"
        "   \n"
        "  # indented comment\n"
        "5 + 4 = 9, 2 + 3 =\n"
    )
    assert prompts_in(text, "x.prompts.txt") == [
        PromptSpan(1, 0, 58, "When Mary and John went to the store, John gave a drink to"),
        PromptSpan(5, 0, 18, "5 + 4 = 9, 2 + 3 ="),
    ]
    assert problems_in(text, "x.prompts.txt") == []


def test_a_prompts_txt_line_keeps_its_spaces_and_any_line_break_style_ends_it():
    text = "  lead\r\ntrail \rlast"
    assert [(s.line, s.prompt) for s in prompts_in(text, "x.prompts.txt")] == [
        (0, "  lead"),
        (1, "trail "),
        (2, "last"),
    ]


def test_a_prompts_txt_hash_inside_a_line_is_not_a_comment():
    assert [s.prompt for s in prompts_in("Item #1 is", "x.prompts.txt")] == ["Item #1 is"]


def test_a_jsonl_file_gives_the_prompt_field_of_each_object_line():
    lines = [
        json.dumps({"prompt": "When Mary and John went to", "answer": " Mary"}),
        "",
        json.dumps({"id": 2, "prompt": "line\nbreak é 🙂"}),
    ]
    spans = prompts_in("\n".join(lines) + "\n", "x.prompts.jsonl")
    assert spans == [
        PromptSpan(0, 0, len(lines[0]), "When Mary and John went to"),
        PromptSpan(2, 0, len(lines[2]), "line\nbreak é 🙂"),
    ]


def test_malformed_jsonl_lines_are_skipped_and_reported_by_line():
    text = "\n".join(
        [
            '{"prompt": "good"}',
            '{"prompt": "unterminated',
            '["prompt", "a list"]',
            '{"text": "no prompt field"}',
            '{"prompt": 42}',
            '{"prompt": null}',
            '{"prompt": "   "}',
            "   ",
            '"just a string"',
            '{"prompt": "also good"}',
        ]
    )
    assert [(s.line, s.prompt) for s in prompts_in(text, "x.prompts.jsonl")] == [
        (0, "good"),
        (9, "also good"),
    ]
    problems = problems_in(text, "x.prompts.jsonl")
    assert [line for line, _ in problems] == [1, 2, 3, 4, 5, 6, 8]
    messages = dict(problems)
    assert messages[1].startswith("not valid JSON")
    assert "JSON object" in messages[2]
    assert messages[3] == 'no "prompt" field'
    assert messages[4] == '"prompt" must be a string, not a number'
    assert messages[5] == '"prompt" must be a string, not null'
    assert messages[6] == '"prompt" is empty'


def test_a_deeply_nested_jsonl_line_is_a_problem_not_a_crash():
    text = "[" * 100_000 + "]" * 100_000
    assert prompts_in(text, "x.prompts.jsonl") == []
    assert problems_in(text, "x.prompts.jsonl")[0][1].startswith("not valid JSON")


def test_other_files_have_no_prompts_and_no_problems():
    assert prompts_in("When Mary and John", "notes.md") == []
    assert problems_in("{not json", "notes.jsonl") == []


def test_a_chat_jsonl_file_has_one_conversation_per_line_with_problems_per_line():
    good = {"messages": [{"role": "user", "content": "When Mary and John went"}], "id": "ioi-1"}
    tagged = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Who got the drink?"},
        ],
        "tags": ["ioi"],
    }
    lines = [
        json.dumps(good),
        "",
        '{"prompt": "not a chat"}',
        json.dumps(tagged),
        '{"messages": [{"role": "robot", "content": "hi"}]}',
        '{"messages": [{"role": "user", "content": "hi"}], "id": 3}',
        '{"messages": [{"role": "user", "content": "hi"}], "tags": "ioi"}',
        "[1, 2]",
        "{broken",
    ]
    text = "\n".join(lines)
    assert prompt_file_kind("file:///a/ioi.chat.jsonl") == "chat"
    spans = prompts_in(text, "ioi.chat.jsonl")
    assert [(s.line, s.prompt) for s in spans] == [
        (0, "When Mary and John went"),
        (3, "Who got the drink?"),
    ]
    assert spans[1].messages is not None
    assert [(m.role, m.content) for m in spans[1].messages] == [
        ("system", "Be brief."),
        ("user", "Who got the drink?"),
    ]
    assert spans[0].end == len(lines[0])
    problems = dict(problems_in(text, "ioi.chat.jsonl"))
    assert problems == {
        2: 'no "messages" field',
        4: "message 1: role must be one of system, user, assistant, not 'robot'",
        5: '"id" must be a string, not a number',
        6: '"tags" must be a list of strings',
        7: 'expected a JSON object with a "messages" field',
        8: "not valid JSON: Expecting property name enclosed in double quotes",
    }
