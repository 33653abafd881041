"""One voice in each language: Korean in 합니다체 (never 당신), Chinese with 您 (never 你).

Chinese text also keeps full-width punctuation next to Chinese characters.

Every Korean and Chinese text a witness reads is checked: the catalogues
(`.po`), the default questionnaire's texts and the built-in answer labels.
docs/TRANSLATING.md sets the register down; these tests catch a word outside
it, so a new string in another register cannot slip in unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from babel.messages.pofile import read_po

from portal.core import questionnaire as q
from portal.server.web.i18n import TRANSLATIONS_DIR
from tests.questionnaire_support import QUESTIONNAIRE

# 해요체 sentence endings (…세요, …어요, …나요, …죠); 필요 and 중요 are words, not
# endings, and 아니요 is the answer "no" in every register.
_HAEYO = re.compile(r"(?<![필중수])(?<!아니)(요|죠)(?=[\s.,!?:;)\]”’」]|$)")
# 해라체 endings: a sentence ends in 다 only as 합니다/습니다/입니다; no 어라/거라 orders.
_HAERA = re.compile(r"(?<!니)다(?=[.!?]|$)|(어라|아라|해라|거라)(?=[\s.!?]|$)")
# The plain "you" and "I": 당신, 너, 나는, 내가... (저/제 and 귀하 are the register's words).
_PLAIN_PERSON = re.compile(
    r"당신|(?<![가-힣])(너|너는|네가|너의|나는|내가|나에게|나를|나의|나도)(?![가-힣])"
)
# Chinese: the polite 您 only.
_NI = re.compile(r"你")
_PLACEHOLDER = re.compile(r"%\([a-z_]+\)[sd]|%%")


def korean_register_problems(text: str) -> list[str]:
    """Every word of `text` outside 합니다체 (empty when it is all in the register)."""
    text = _PLACEHOLDER.sub("", text)
    found = []
    for clause in re.split(r"\n+", text):
        for pattern in (_HAEYO, _HAERA, _PLAIN_PERSON):
            found += [clause[max(0, m.start() - 8) : m.end()] for m in pattern.finditer(clause)]
    return found


# Half-width punctuation touching a Chinese character (full-width belongs there).
_HALF_WIDTH = re.compile(r"[\u4e00-\u9fff][,.?:;!()]|[,.?:;!(][\u4e00-\u9fff]")


def chinese_register_problems(text: str) -> list[str]:
    text = _PLACEHOLDER.sub("", text)
    found = [m for pattern in (_NI, _HALF_WIDTH) for m in pattern.finditer(text)]
    return [text[max(0, m.start() - 8) : m.end() + 4] for m in found]


def texts(lang: str) -> Iterator[tuple[str, str]]:
    """(where, text) for every text a witness reads in `lang`."""
    with (TRANSLATIONS_DIR / lang / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        for message in read_po(handle):
            if message.id and message.string:
                string = message.string
                for text in string if isinstance(string, (tuple, list)) else (string,):
                    yield f"messages.po {message.id!r}", str(text)
    for question in QUESTIONNAIRE.questions:
        yield f"questionnaire {question.id} label", question.label[lang]
        if question.help:
            yield f"questionnaire {question.id} help", question.help[lang]
        for choice in question.choices:
            yield f"questionnaire {question.id}/{choice.id}", choice.label[lang]
    yield "CONSENT_SAME_LABELS", q.CONSENT_SAME_LABELS[lang]
    for labels in q.YES_NO_LABELS.values():
        yield "YES_NO_LABELS", labels[lang]


@pytest.mark.parametrize(
    "sample",
    ["이 칸은 비워 두세요.", "보냈나요?", "당신의 증언", "나는 보았다.", "여기 적어라", "맞죠"],
)
def test_the_korean_check_catches_each_other_register(sample: str) -> None:
    assert korean_register_problems(sample), sample


@pytest.mark.parametrize(
    "sample",
    [
        "이 칸은 비워 두십시오.",
        "보내셨습니까?",
        "귀하의 증언",
        "제가 보았습니다.",
        "필요합니다.",
        "중요",
    ],
)
def test_the_korean_check_passes_the_register(sample: str) -> None:
    assert korean_register_problems(sample) == [], sample


def test_every_korean_text_is_in_one_register() -> None:
    problems = [
        f"{where}: …{word}"
        for where, text in texts("ko")
        for word in korean_register_problems(text)
    ]
    assert problems == [], "\n".join(problems)


def test_every_chinese_text_says_nin_never_ni() -> None:
    assert chinese_register_problems("你的证词") and not chinese_register_problems("您的证词")
    assert chinese_register_problems("证词,已收到") and not chinese_register_problems(
        "证词，已收到"
    )
    problems = [
        f"{where}: {word}"
        for where, text in texts("zh")
        for word in chinese_register_problems(text)
    ]
    assert problems == [], "\n".join(problems)
