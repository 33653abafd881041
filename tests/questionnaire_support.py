"""The default questionnaire as the tests see it, and one witness's answers to every question."""

from __future__ import annotations

import html
import re

from portal.core.questionnaire import (
    DEFAULT_QUESTIONNAIRE,
    Question,
    load_questionnaire,
    read_answers,
)

LANGUAGES = ("en", "ko", "zh")
QUESTIONNAIRE = load_questionnaire(DEFAULT_QUESTIONNAIRE, LANGUAGES)

# One witness's answers on each path of the default questionnaire, in Korean.
KOREAN_PATHS: dict[str, dict[str, str]] = {
    "suffered": {
        "role": "suffered",
        "testimony": "2018년 봄, 온성 보위부 구류장에 두 달 동안 갇혀 밤마다 심문받았습니다.",
        "when": "2018년 봄",
        "where": "함경북도 온성군, 보위부 구류장",
        "responsible": "보위부 예심원, 이름은 모릅니다",
        "confirm": "같은 감방에 있던 여성 한 명",
        "anything_else": "풀려난 뒤 바로 국경을 넘었습니다.",
        "consent": "yes",
    },
    "saw": {
        "role": "saw",
        "testimony": "2019년 겨울, 청진 집결소에서 밤마다 사람들이 끌려 나가는 것을 보았습니다.",
        "when": "2019년 겨울쯤",
        "where": "함경북도 청진시, 집결소",
        "responsible": "보위부 계호원들, 이름은 모릅니다",
        "how_known": "saw",
        "confirm": "같은 방에 있던 사람 두 명",
        "anything_else": "그 뒤로 그 사람들을 다시 보지 못했습니다.",
        "consent": "anonymous",
    },
    "took_part": {
        "role": "took_part",
        "organisation": "국가보위성 함경북도 보위국 예심과",
        "position": "하급 군관",
        "period": "2012년부터 2016년까지",
        "places": "회령시 보위부 구류장, 제12호 교화소 근처",
        "did_and_saw": "송환된 사람들을 심문하고 구타하는 것을 보았고, 저도 명단을 작성했습니다.",
        "orders": "예심과장이 구두로 지시했고, 과장은 도 보위국장의 지시라고 말했습니다.",
        "others_involved": "같은 과의 계호원 세 명",
        "victims": "중국에서 송환된 여성들, 한 달에 스무 명쯤",
        "records": "예심 기록과 송환자 명단이 도 보위국 문서고에 있었습니다.",
        "investigators": "maybe",
        "anything_else": "가족이 아직 북한에 있습니다.",
        "consent": "ask",
    },
}
# The witness who saw it: the answers older tests use.
KOREAN_ANSWERS = KOREAN_PATHS["saw"]


def asked_questions(answers: dict[str, str]) -> list[Question]:
    """The questions of the default questionnaire asked of a witness who answers so."""
    return read_answers(
        QUESTIONNAIRE, lambda name: [answers[name]] if name in answers else [], long_text_limit=9**9
    ).shown


def assert_each_answer_under_its_question(page: str, answers: dict[str, str]) -> None:
    """Each question's Korean text, with its English label beside it, then its answer."""
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    positions = []
    for question in asked_questions(answers):
        heading = f"{question.label['ko']} ({question.label['en']}; {question.id})"
        assert heading in text, heading
        positions.append((text.index(heading), question))
    positions.sort(key=lambda item: item[0])
    for index, (start, question) in enumerate(positions):
        end = positions[index + 1][0] if index + 1 < len(positions) else len(text)
        section = text[start:end]
        if question.type == "notice":
            # What the witness read before answering, in the sealed words.
            for paragraph in question.help["ko"].split("\n\n"):
                assert paragraph.strip() in section, (question.id, paragraph)
        if question.id in answers:
            value = answers[question.id]
            if question.choices:
                [choice] = [c for c in question.choices if c.id == value]
                value = f"{choice.label['ko']} ({choice.label['en']}; {choice.id})"
            assert value in section, (question.id, section[:400])
