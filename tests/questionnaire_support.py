"""The default questionnaire as the tests see it, and one witness's answers to every question."""

from __future__ import annotations

import html
import re

from portal.core.questionnaire import DEFAULT_QUESTIONNAIRE, load_questionnaire

LANGUAGES = ("en", "ko", "zh")
QUESTIONNAIRE = load_questionnaire(DEFAULT_QUESTIONNAIRE, LANGUAGES)

# One answer to every question of the default questionnaire, in Korean.
KOREAN_ANSWERS = {
    "testimony": "2019년 겨울, 청진 집결소에서 밤마다 사람들이 끌려 나가는 것을 보았습니다.",
    "when": "2019년 겨울쯤",
    "where": "함경북도 청진시, 집결소",
    "responsible": "보위부 계호원들, 이름은 모릅니다",
    "how_known": "saw",
    "confirm": "같은 방에 있던 사람 두 명",
    "anything_else": "그 뒤로 그 사람들을 다시 보지 못했습니다.",
    "consent": "anonymous",
}


def assert_each_answer_under_its_question(page: str, answers: dict[str, str]) -> None:
    """Each question's Korean text, with its English label beside it, then its answer."""
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    positions = []
    for question in QUESTIONNAIRE.questions:
        heading = f"{question.label['ko']} ({question.label['en']}; {question.id})"
        assert heading in text, heading
        positions.append((text.index(heading), question))
    positions.sort(key=lambda item: item[0])
    for index, (start, question) in enumerate(positions):
        end = positions[index + 1][0] if index + 1 < len(positions) else len(text)
        section = text[start:end]
        if question.id in answers:
            value = answers[question.id]
            if question.choices:
                [choice] = [c for c in question.choices if c.id == value]
                value = f"{choice.label['ko']} ({choice.label['en']}; {choice.id})"
            assert value in section, (question.id, section[:400])
