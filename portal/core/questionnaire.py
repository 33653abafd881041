"""The questionnaire: which questions the form asks, in which words, and what counts as an answer.

An organisation describes its questions in a TOML file (`PORTAL_QUESTIONNAIRE`;
the default ships in `portal/core/questionnaires/default.toml`). The file is
checked strictly when it is loaded, and every mistake is reported with the
line it is on, so the server refuses to start rather than show witnesses a
broken form. Each submission seals the exact texts the witness saw (see
`Questionnaire.sealed`), so changing the file later never changes what an
old submission says it asked.

Plain Python: no Flask, no environment. The web layer renders the questions
and translates the problems `read_answers` reports.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from portal.core.manifest import SealedChoice, SealedQuestion, SealedQuestionnaire

# At most this many sealed copies are kept per questionnaire (see `Questionnaire.sealed`).
MAX_KEPT_SEALED = 256
DEFAULT_QUESTIONNAIRE = Path(__file__).resolve().parent / "questionnaires" / "default.toml"


class QuestionKind(enum.StrEnum):
    """What a question asks for: the `type` of a question in the file and in the manifest."""

    SHORT_TEXT = "short_text"
    LONG_TEXT = "long_text"
    DATE = "date"
    APPROXIMATE_DATE = "approximate_date"
    SINGLE_CHOICE = "single_choice"
    MULTIPLE_CHOICE = "multiple_choice"
    YES_NO = "yes_no"
    FILES = "files"
    # Words only, no answer: what the witness should know before the
    # questions that follow it (for example what may happen to an insider's
    # testimony). Sealed with the answers, so the evidence records it.
    NOTICE = "notice"

    @property
    def has_choices(self) -> bool:
        return self in (
            QuestionKind.SINGLE_CHOICE,
            QuestionKind.MULTIPLE_CHOICE,
            QuestionKind.YES_NO,
        )


class Consent(enum.StrEnum):
    """The answers of the consent question, which the reviewer's `forward` enforces (issue 12).

    The question's id (CONSENT_ID) and these answers are fixed, so the tools
    can read them in every submission.
    """

    YES = "yes"
    ANONYMOUS = "anonymous"
    ASK = "ask"
    NO = "no"

    @property
    def meaning(self) -> str:
        """What the answer allows, in the words the reviewer's tools print."""
        return _CONSENT_MEANINGS[self]


_CONSENT_MEANINGS = {
    Consent.YES: "may be passed on",
    Consent.ANONYMOUS: "only without their name and identifying details",
    Consent.ASK: "ask the witness first",
    Consent.NO: "must not be passed on",
}
CONSENT_ID = "consent"
# The answer of a submission that has none (older ones): ask the witness first.
CONSENT_DEFAULT = Consent.ASK
# A follow-up's consent question offers one more answer (issue 22): "the
# same as I answered before". The server cannot read the earlier answer, so
# the reviewer's tools resolve it from the conversation. It is not a Consent:
# on its own it allows nothing.
CONSENT_SAME = "same"
CONSENT_SAME_LABELS = {
    "en": "The same as I answered before",
    "ko": "지난번에 답한 것과 같습니다",
    "zh": "与我上次的回答相同",
}
# The free-text testimony keeps its historic field name (`fields.testimony`).
TESTIMONY_ID = "testimony"
# Form names the page already uses for something else. A files question is
# always sent as `attachments`, the streaming, encrypted upload.
RESERVED_IDS = ("csrf_token", "website", "form_id", "attachments", "language", "format")
ATTACHMENTS_FIELD = "attachments"
# A multiple-choice answer is stored as its choice ids in questionnaire order,
# joined by this separator (choice ids cannot contain it), so every answer in
# the manifest stays one string.
CHOICE_SEPARATOR = ","

# Longest answer kept per type; a long text is bounded by the portal's
# testimony limit (PORTAL_MAX_TESTIMONY_CHARS) instead.
SHORT_TEXT_MAX_CHARS = 2000
APPROXIMATE_DATE_MAX_CHARS = 200
DATE_MAX_CHARS = 10

# Built-in labels of a yes/no question's two answers, for a file that gives none.
YES_NO_LABELS: dict[str, dict[str, str]] = {
    "yes": {"en": "Yes", "ko": "예", "zh": "是"},
    "no": {"en": "No", "ko": "아니요", "zh": "否"},
}

_QUESTIONNAIRE_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_QUESTION_ID_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_CHOICE_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_DATE_RE = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?")
_TOML_POSITION_RE = re.compile(r"\(at line (\d+), column (\d+)\)|\(at end of document\)")
_TOP_KEYS = {"id", "version", "questions"}
_QUESTION_KEYS = {
    "id",
    "type",
    "required",
    "identifying",
    "label",
    "help",
    "choices",
    "page",
    "show_if",
    "hide_if",
}
# A form of this many pages is plenty; more is a mistake in the file.
MAX_PAGES = 20
_CHOICE_KEYS = {"id", "label"}


class QuestionnaireError(Exception):
    """The questionnaire file cannot be used; `problems` lists every mistake with its line."""

    def __init__(self, path: Path, problems: Sequence[tuple[int, str]]) -> None:
        self.path = path
        self.problems = list(problems)
        line, text = self.problems[0]
        more = len(self.problems) - 1
        suffix = f" (and {more} more; `testimony-portal check` lists them all)" if more else ""
        super().__init__(f"questionnaire {path} line {line}: {text}{suffix}")

    def lines(self) -> list[str]:
        return [f"questionnaire {self.path} line {line}: {text}" for line, text in self.problems]


class Problem(enum.Enum):
    """Why an answer was refused; the web layer words it in the witness's language."""

    REQUIRED = "required"
    BAD_CHOICE = "bad_choice"
    BAD_DATE = "bad_date"
    TOO_LONG = "too_long"


@dataclass(frozen=True)
class Condition:
    """When a question is asked: an earlier choice question's answer is (or is not) in `choices`."""

    question: str
    choices: frozenset[str]
    # False for `hide_if`: asked unless the answer is one of the choices
    # (so also when that question was not answered at all).
    shown_on_match: bool

    def holds(self, values: Mapping[str, str]) -> bool:
        answer = values.get(self.question)
        if not answer:  # not answered: none of the choices was chosen
            return not self.shown_on_match
        answered = set(answer.split(CHOICE_SEPARATOR)) - {""}
        return bool(answered & self.choices) == self.shown_on_match


@dataclass(frozen=True)
class Question:
    """One checked question; texts are keyed by language."""

    id: str
    type: QuestionKind
    required: bool
    identifying: bool
    label: Mapping[str, str]
    help: Mapping[str, str]
    choices: tuple[Choice, ...]
    # The page of the form it is on (1 for a one-page form), and when it is asked.
    page: int = 1
    condition: Condition | None = None

    @property
    def form_name(self) -> str:
        return ATTACHMENTS_FIELD if self.type == QuestionKind.FILES else self.id

    @property
    def answered(self) -> bool:
        """Whether the witness answers it in a form field (one that travels between pages)."""
        return self.type not in (QuestionKind.FILES, QuestionKind.NOTICE)

    def max_chars(self, long_text_limit: int) -> int:
        return {
            QuestionKind.SHORT_TEXT: SHORT_TEXT_MAX_CHARS,
            QuestionKind.APPROXIMATE_DATE: APPROXIMATE_DATE_MAX_CHARS,
            QuestionKind.DATE: DATE_MAX_CHARS,
        }.get(self.type, long_text_limit)

    def sealed(self, language: str) -> SealedQuestion:
        """The question as the witness saw it, with the English label beside."""
        return SealedQuestion(
            id=self.id,
            type=self.type.value,
            required=self.required,
            identifying=self.identifying,
            label=self.label[language],
            label_en=self.label["en"],
            help=self.help[language] if self.help else "",
            choices=tuple(c.sealed(language) for c in self.choices),
        )


@dataclass(frozen=True)
class Choice:
    """One answer of a choice question: its stored id and its label in each language."""

    id: str
    label: Mapping[str, str]

    def sealed(self, language: str) -> SealedChoice:
        """What the manifest records of it: the id and the label shown, with the English one."""
        return SealedChoice(self.id, self.label[language], self.label["en"])


@dataclass(frozen=True)
class Questionnaire:
    """A checked questionnaire file; `sha256` is of its bytes, sealed in each manifest."""

    id: str
    version: str
    sha256: str
    questions: tuple[Question, ...]
    path: Path
    # Sealed copies by language and path (see `sealed`).
    _sealed: dict[tuple[str, tuple[str, ...]], SealedQuestionnaire] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @cached_property
    def _by_id(self) -> dict[str, Question]:
        return {q.id: q for q in self.questions}

    def question(self, question_id: str) -> Question | None:
        return next((q for q in self.questions if q.id == question_id), None)

    @property
    def form_parts(self) -> int:
        """The most form parts an honest browser sends for the questions (a box per choice)."""
        return sum(max(1, len(q.choices)) for q in self.questions) + 2  # page, go

    @property
    def last_page(self) -> int:
        return max(q.page for q in self.questions)

    def followup(self) -> Questionnaire:
        """The questions of a follow-up sent with a receipt: the testimony, files and consent.

        Consent is asked again, nothing chosen, with one more answer: the
        same as before (CONSENT_SAME), which the reviewer's tools resolve
        from the conversation.
        """
        kept = []
        for question in self.questions:
            if question.id == CONSENT_ID:
                same = Choice(CONSENT_SAME, dict(CONSENT_SAME_LABELS))
                kept.append(replace(question, choices=(same, *question.choices), page=1))
            elif question.id == TESTIMONY_ID or question.type == QuestionKind.FILES:
                kept.append(replace(question, page=1, condition=None))
        return replace(self, questions=tuple(kept))

    def sealed(self, language: str, shown: Iterable[Question] | None = None) -> SealedQuestionnaire:
        """What the manifest records: this file's identity and the exact texts shown.

        Only the questions in `shown` (all by default) are sealed: those the
        witness was asked, with the notices they read. The English label of
        each question and answer is sealed beside the witness's own words,
        so the reviewer's tools can show both without the questionnaire
        file, which may have changed since.
        """
        questions = self.questions if shown is None else tuple(shown)
        key = (language, tuple(q.id for q in questions))
        sealed = self._sealed.get(key)
        # Only this file's own questions are sealed from the kept copies.
        own = all(q is self._by_id.get(q.id) for q in questions)
        if sealed is None or not own:
            sealed = SealedQuestionnaire(
                id=self.id,
                version=self.version,
                sha256=self.sha256,
                language=language,
                questions=tuple(q.sealed(language) for q in questions),
            )
            # Kept: the same path in the same language seals the same texts,
            # and its JSON is then made once (`SealedQuestionnaire.json_member`).
            # A path is a set of this file's questions; the cap bounds a
            # questionnaire with very many conditions.
            if own and len(self._sealed) < MAX_KEPT_SEALED:
                self._sealed[key] = sealed
        return sealed


@dataclass
class Answers:
    """The witness's answers as they will be stored, and what was wrong with them."""

    values: dict[str, str] = field(default_factory=dict)
    # The questions asked (their conditions hold), notices included, in order.
    shown: list[Question] = field(default_factory=list)
    # What the witness sent for a choice question, to show it again on an error.
    chosen: dict[str, list[str]] = field(default_factory=dict)
    problems: dict[str, Problem] = field(default_factory=dict)

    @property
    def has_text(self) -> bool:
        """Whether any written answer (not only ticked boxes) was given."""
        return any(v.strip() for k, v in self.values.items() if k not in self.chosen)


# ------------------------------------------------------------------ loading


def load_questionnaire(path: Path, languages: Iterable[str]) -> Questionnaire:
    """Read and check a questionnaire file for the portal's languages.

    Raises:
        QuestionnaireError: unreadable, not TOML, or not a valid questionnaire;
            every problem names its line.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise QuestionnaireError(
            path, [(1, f"cannot read the file ({exc.strerror or exc}); check PORTAL_QUESTIONNAIRE")]
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise QuestionnaireError(path, [(line, "the file is not UTF-8 text")]) from None
    # Imported here: the reviewer's tool reads sealed questionnaires, never
    # TOML, and starts once for every `open` (docs/BENCHMARKS.md, round 7).
    import tomllib

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise QuestionnaireError(path, [_syntax_problem(str(exc), text)]) from None
    checker = _Checker(text, tuple(languages))
    questionnaire = checker.check(document, hashlib.sha256(raw).hexdigest(), path)
    if checker.problems:
        raise QuestionnaireError(path, sorted(checker.problems))
    assert questionnaire is not None
    return questionnaire


def _syntax_problem(message: str, text: str) -> tuple[int, str]:
    match = _TOML_POSITION_RE.search(message)
    what = _TOML_POSITION_RE.sub("", message).strip()
    if match is None:
        return 1, f"not valid TOML: {what}"
    if match.group(1) is None:
        return text.count("\n") + 1, f"not valid TOML: {what} (the file ends too early)"
    return int(match.group(1)), f"not valid TOML: {what} (column {match.group(2)})"


class _Checker:
    """Checks a parsed questionnaire, finding each problem's line in the source text.

    tomllib keeps no positions, so the lines are found in the text: the n-th
    `[[questions]]` header starts question n, the n-th `[[questions.choices]]`
    after it starts its choice n, and a key is on the first line of that
    range that assigns it.
    """

    def __init__(self, text: str, languages: tuple[str, ...]) -> None:
        self.lines = text.splitlines()
        self.languages = languages
        self.problems: list[tuple[int, str]] = []
        self.question_starts = self._headers(r"\[\[\s*questions\s*\]\]", 0, len(self.lines))

    def _headers(self, pattern: str, start: int, end: int) -> list[int]:
        header = re.compile(rf"\s*{pattern}\s*(#.*)?$")
        return [i for i in range(start, end) if header.match(self.lines[i])]

    def _question_range(self, index: int) -> tuple[int, int]:
        if index >= len(self.question_starts):
            return 0, len(self.lines)
        start = self.question_starts[index]
        following = [s for s in self.question_starts if s > start]
        return start, following[0] if following else len(self.lines)

    def _key_line(self, key: str, start: int, end: int, default: int) -> int:
        pattern = re.compile(rf"\s*(\[\s*)?({re.escape(key)}|\"{re.escape(key)}\")\s*[=.\]]")
        scoped = re.compile(rf"\s*\[\s*questions\.{re.escape(key)}\s*\]")
        for i in range(start, end):
            if pattern.match(self.lines[i]) or scoped.match(self.lines[i]):
                return i + 1
        return default + 1

    def problem(self, line: int, text: str) -> None:
        self.problems.append((line, text))

    def check(self, document: dict[str, Any], sha256: str, path: Path) -> Questionnaire | None:
        top_end = self.question_starts[0] if self.question_starts else len(self.lines)
        for key in sorted(set(document) - _TOP_KEYS):
            self.problem(
                self._key_line(key, 0, top_end, 0),
                f"unknown setting {key!r} (allowed: id, version, [[questions]])",
            )
        qid = document.get("id")
        if not isinstance(qid, str) or not _QUESTIONNAIRE_ID_RE.fullmatch(qid):
            self.problem(
                self._key_line("id", 0, top_end, 0),
                "'id' must be a short name of lowercase letters, digits, '.', '_' or '-', "
                'for example id = "grave-violations"',
            )
        version = document.get("version")
        if isinstance(version, bool) or not isinstance(version, str | int) or str(version) == "":
            self.problem(
                self._key_line("version", 0, top_end, 0),
                "'version' must be given, as text or a number (for example version = \"3\"); "
                "raise it whenever you change a question",
            )
        raw_questions = document.get("questions")
        if not isinstance(raw_questions, list) or not raw_questions:
            self.problem(1, "no questions: add at least one [[questions]] table")
            return None
        questions: list[Question] = []
        page = 1
        for index, raw in enumerate(raw_questions):
            question = self._question(index, raw)
            page = self._page(index, raw, page)
            if question is not None:
                condition = self._condition(index, raw, question, questions, page)
                questions.append(replace(question, page=page, condition=condition))
        self._whole(questions, raw_questions)
        if self.problems:
            return None
        return Questionnaire(
            id=str(qid), version=str(version), sha256=sha256, questions=tuple(questions), path=path
        )

    def _question(self, index: int, raw: Any) -> Question | None:
        start, end = self._question_range(index)
        here = start + 1
        number = f"question {index + 1}"

        def line(key: str) -> int:
            return self._key_line(key, start + 1, end, start)

        if not isinstance(raw, dict):
            self.problem(here, f"{number} is not a table; write it as [[questions]]")
            return None
        ok, qid = self._keys_and_id(
            raw,
            _QUESTION_KEYS,
            _QUESTION_ID_RE,
            "start with a lowercase letter and hold only lowercase "
            'letters, digits and "_" (for example id = "where")',
            number,
            line,
        )
        if qid is None:
            return None
        number = f"question {qid!r}"
        kind = next((k for k in QuestionKind if k.value == raw.get("type")), None)
        if kind is None:
            self.problem(line("type"), f"{number}: 'type' must be one of {', '.join(QuestionKind)}")
            return None
        if kind != QuestionKind.FILES and qid in RESERVED_IDS:
            ok = False
            self.problem(line("id"), f"{number}: the id {qid!r} is reserved; choose another")
        flags = {}
        for key in ("required", "identifying"):
            value = raw.get(key, False)
            if not isinstance(value, bool):
                ok = False
                self.problem(line(key), f"{number}: {key!r} must be true or false")
            elif value and kind == QuestionKind.NOTICE:
                ok = False
                self.problem(line(key), f"{number}: a notice has no answer, so it cannot be {key}")
            flags[key] = value is True
        label = self._texts(raw.get("label"), line("label"), f"{number}: 'label'", required=True)
        help_texts = self._texts(
            raw.get("help"), line("help"), f"{number}: 'help'", required=kind == QuestionKind.NOTICE
        )
        first_choice = self._headers(r"\[\[\s*questions\.choices\s*\]\]", start, end)
        choices_line = first_choice[0] + 1 if first_choice else line("choices")
        choices = self._choices(raw.get("choices"), kind, number, start, end, choices_line)
        if label is None or help_texts is None or choices is None or not ok:
            return None
        return Question(
            qid, kind, flags["required"], flags["identifying"], label, help_texts, choices
        )

    def _line_in(self, index: int, key: str) -> int:
        start, end = self._question_range(index)
        return self._key_line(key, start + 1, end, start)

    def _page(self, index: int, raw: Any, current: int) -> int:
        """The page this question is on: `page = N` starts page N, else the page goes on."""
        if not isinstance(raw, dict) or "page" not in raw:
            return current
        value = raw["page"]
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(
                self._line_in(index, "page"), "'page' must be a whole number, like page = 2"
            )
            return current
        if value not in (current, current + 1) or value > MAX_PAGES:
            self.problem(
                self._line_in(index, "page"),
                f"'page = {value}' does not follow page {current}: pages are numbered 1, 2, 3 "
                f"in the order of the file (at most {MAX_PAGES}); "
                "a question without 'page' stays on the page before it",
            )
            return current
        return value

    def _condition(
        self,
        index: int,
        raw: dict[str, Any],
        question: Question,
        earlier: list[Question],
        page: int,
    ) -> Condition | None:
        """`show_if` or `hide_if`: one earlier choice question and some of its choice ids."""
        keys = [key for key in ("show_if", "hide_if") if key in raw]
        if not keys:
            return None
        key = keys[0]
        line = self._line_in(index, key)
        where = f"question {question.id!r}: {key!r}"
        example = f'for example {key} = {{ role = ["took_part"] }}'
        if len(keys) > 1:
            self.problem(line, f"question {question.id!r}: give show_if or hide_if, not both")
            return None
        value = raw[key]
        if not isinstance(value, dict) or len(value) != 1:
            self.problem(line, f"{where} must name one earlier question and its choices, {example}")
            return None
        [(source_id, wanted)] = value.items()
        if isinstance(wanted, str):
            wanted = [wanted]
        if (
            not isinstance(wanted, list)
            or not wanted
            or not all(isinstance(w, str) for w in wanted)
        ):
            self.problem(line, f"{where} must list choice ids of {source_id!r}, {example}")
            return None
        source = next((q for q in earlier if q.id == source_id), None)
        if source is None or not source.type.has_choices:
            self.problem(
                line,
                f"{where} names {source_id!r}, which is not a choice question earlier in the file",
            )
            return None
        if source.page >= page:
            self.problem(
                line,
                f"{where} names {source_id!r}, which is on the same page (page {page}); "
                "a question can only depend on an answer given on an earlier page "
                "(the form works without JavaScript)",
            )
            return None
        unknown = sorted(set(wanted) - {c.id for c in source.choices})
        if unknown:
            self.problem(
                line,
                f"{where}: {source_id!r} has no choice {', '.join(map(repr, unknown))} "
                f"(it has {', '.join(c.id for c in source.choices)})",
            )
            return None
        return Condition(source_id, frozenset(wanted), key == "show_if")

    def _keys_and_id(
        self,
        raw: dict[str, Any],
        allowed: set[str],
        id_re: re.Pattern[str],
        id_rule: str,
        where: str,
        line: Callable[[str], int],
    ) -> tuple[bool, str | None]:
        """Report a table's unknown keys and a malformed id (a question's or a choice's).

        Returns whether every key is allowed, and the id, or None if it is
        missing or malformed.
        """
        unknown = sorted(set(raw) - allowed)
        for key in unknown:
            self.problem(
                line(key), f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})"
            )
        ident = raw.get("id")
        if not isinstance(ident, str) or not id_re.fullmatch(ident):
            self.problem(line("id"), f"{where}: 'id' must {id_rule}")
            return not unknown, None
        return not unknown, ident

    def _texts(self, raw: Any, line: int, what: str, *, required: bool) -> dict[str, str] | None:
        if raw is None and not required:
            return {}
        wanted = ", ".join(self.languages)
        if not isinstance(raw, dict):
            self.problem(
                line,
                f"{what} must give the text in every language ({wanted}), "
                f'for example label = {{ en = "...", ko = "...", zh = "..." }}',
            )
            return None
        texts = {}
        problems = []
        for language in self.languages:
            value = raw.get(language)
            if not isinstance(value, str) or not value.strip():
                problems.append(language)
            else:
                texts[language] = value.strip()
        if problems:
            self.problem(line, f"{what} has no text in {', '.join(problems)} (needed: {wanted})")
        unknown = sorted(set(raw) - set(self.languages))
        if unknown:
            self.problem(
                line,
                f"{what} has a text in {', '.join(map(repr, unknown))}, which the portal does "
                f"not serve (it serves {wanted})",
            )
        return None if problems or unknown else texts

    def _choices(
        self, raw: Any, kind: QuestionKind, number: str, start: int, end: int, key_line: int
    ) -> tuple[Choice, ...] | None:
        if not kind.has_choices:
            if raw is not None:
                self.problem(key_line, f"{number}: a {kind} question has no choices")
                return None
            return ()
        if kind == QuestionKind.YES_NO and raw is None:
            missing = [lang for lang in self.languages if lang not in YES_NO_LABELS["yes"]]
            if missing:
                self.problem(
                    start + 1,
                    f"{number}: give [[questions.choices]] yes and no with labels in "
                    f"{', '.join(missing)}",
                )
                return None
            return tuple(
                Choice(cid, {lang: YES_NO_LABELS[cid][lang] for lang in self.languages})
                for cid in ("yes", "no")
            )
        choice_starts = self._headers(r"\[\[\s*questions\.choices\s*\]\]", start, end)
        if not isinstance(raw, list) or len(raw) < 2:
            self.problem(
                key_line, f"{number}: a {kind} question needs at least two [[questions.choices]]"
            )
            return None
        choices = []
        seen: set[str] = set()
        for index, item in enumerate(raw):
            c_start = choice_starts[index] if index < len(choice_starts) else start
            c_end = next((s for s in choice_starts if s > c_start), end)

            def line(key: str, c_start: int = c_start, c_end: int = c_end) -> int:
                return self._key_line(key, c_start + 1, c_end, c_start)

            where = f"{number}, choice {index + 1}"
            if not isinstance(item, dict):
                self.problem(c_start + 1, f"{where} is not a table")
                continue
            _ok, cid = self._keys_and_id(
                item,
                _CHOICE_KEYS,
                _CHOICE_ID_RE,
                "be lowercase letters, digits, '_' or '-' (for example id = \"saw\")",
                where,
                line,
            )
            if cid is None:
                continue
            if cid in seen:
                self.problem(line("id"), f"{where}: the choice id {cid!r} is used twice")
                continue
            seen.add(cid)
            label = self._texts(
                item.get("label"), line("label"), f"{where}: 'label'", required=True
            )
            if label is not None:
                choices.append(Choice(cid, label))
        if kind == QuestionKind.YES_NO and seen != {"yes", "no"}:
            self.problem(key_line, f"{number}: a yes_no question's choices are 'yes' and 'no'")
            return None
        if len(choices) != len(raw):
            return None
        return tuple(choices)

    def _whole(self, questions: list[Question], raw_questions: list[Any]) -> None:
        """Rules about the questionnaire as a whole: unique ids, one files question, consent."""
        ids: dict[str, int] = {}
        for index, raw in enumerate(raw_questions):
            qid = raw.get("id") if isinstance(raw, dict) else None
            if not isinstance(qid, str):
                continue
            start, end = self._question_range(index)
            if qid in ids:
                self.problem(
                    self._key_line("id", start + 1, end, start),
                    f"question id {qid!r} is used twice (first on line {ids[qid]})",
                )
            else:
                ids[qid] = self._key_line("id", start + 1, end, start)
        testimony = next((q for q in questions if q.id == TESTIMONY_ID), None)
        if testimony is not None and testimony.type != QuestionKind.LONG_TEXT:
            # The free text is the form's testimony field, with its own
            # length limit (PORTAL_MAX_TESTIMONY_CHARS).
            self.problem(ids[TESTIMONY_ID], "the question 'testimony' must be of type long_text")
        files = [q for q in questions if q.type == QuestionKind.FILES]
        if len(files) > 1:
            self.problem(ids[files[1].id], "only one question may be of type files")
        if CONSENT_ID not in ids:
            self.problem(
                1,
                f"no consent question: add a [[questions]] with id = {CONSENT_ID!r}, "
                'type = "single_choice", required = true and the choices '
                f"{', '.join(Consent)} (see the shipped default questionnaire)",
            )
            return
        last_page = max((q.page for q in questions), default=1)
        for question in files:
            if question.page != last_page:
                # A chosen file cannot travel from page to page in a form.
                self.problem(
                    ids[question.id],
                    f"the files question {question.id!r} must be on the last page "
                    f"(page {last_page}): files cannot be carried from one page to the next",
                )
        consent = next((q for q in questions if q.id == CONSENT_ID), None)
        if consent is None:
            return  # Its own problems were reported already.
        where = ids[CONSENT_ID]
        if consent.page != last_page or consent.condition is not None:
            self.problem(
                where,
                f"the consent question must be asked of everyone on the last page "
                f"(page {last_page}), with no show_if or hide_if",
            )
        if consent.type != QuestionKind.SINGLE_CHOICE:
            self.problem(where, "the consent question must be of type single_choice")
        if not consent.required:
            self.problem(where, "the consent question must have required = true")
        chosen = tuple(c.id for c in consent.choices)
        if sorted(chosen) != sorted(Consent):
            self.problem(
                where,
                f"the consent question's choices must be exactly {', '.join(Consent)} "
                f"(it has {', '.join(chosen) or 'none'}): the reviewer's tools enforce them",
            )


# ------------------------------------------------------------------ answers


def read_answers(
    questionnaire: Questionnaire,
    get_list: Callable[[str], list[Any]],
    *,
    long_text_limit: int,
    skip: Iterable[str] = (),
    up_to_page: int | None = None,
) -> Answers:
    """Check the witness's answers: `get_list(name)` gives every value sent under a form name.

    Only the questions asked are read (a condition decides from the answers
    to earlier pages; `up_to_page` stops at a page): an answer sent for a
    question that was not asked is left out, whatever the form sent.
    Values that are not text (a file part under a question's name, from a
    hostile client) are ignored. Questions in `skip` are read by someone
    else (the free-text testimony by the form) but still checked for being
    required. Files are never read here.
    """
    answers = Answers()
    skipped = set(skip)
    for q in questionnaire.questions:
        if up_to_page is not None and q.page > up_to_page:
            break
        if q.condition is not None and not q.condition.holds(answers.values):
            continue
        answers.shown.append(q)
        if not q.answered:
            continue
        values = [normalise_line_breaks(v) for v in get_list(q.form_name) if isinstance(v, str)]
        if q.type.has_choices:
            _read_choice(q, values, answers)
            continue
        text = values[0] if values else ""
        if not text.strip():
            if q.required:
                answers.problems[q.id] = Problem.REQUIRED
            continue
        if q.id in skipped:
            continue
        answers.values[q.id] = text
        if len(text) > q.max_chars(long_text_limit):
            answers.problems[q.id] = Problem.TOO_LONG
        elif q.type == QuestionKind.DATE and not is_partial_date(text.strip()):
            answers.problems[q.id] = Problem.BAD_DATE
        elif q.type == QuestionKind.DATE:
            answers.values[q.id] = text.strip()
    return answers


def _read_choice(q: Question, values: list[str], answers: Answers) -> None:
    known = [c.id for c in q.choices]
    sent = [v for v in values if v]
    answers.chosen[q.id] = sent
    if not sent:
        if q.required:
            answers.problems[q.id] = Problem.REQUIRED
        return
    if any(v not in known for v in sent) or (
        q.type != QuestionKind.MULTIPLE_CHOICE and len(set(sent)) > 1
    ):
        answers.problems[q.id] = Problem.BAD_CHOICE
        return
    answers.values[q.id] = CHOICE_SEPARATOR.join(c for c in known if c in sent)


def is_partial_date(text: str) -> bool:
    """A year (2019), a month (2019-05) or a day (2019-05-14) that exists in the calendar."""
    match = _DATE_RE.fullmatch(text)
    if match is None:
        return False
    year, month, day = (int(g) if g else 1 for g in match.groups())
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    return year >= 1900


def normalise_line_breaks(value: Any) -> Any:
    """Browsers send line breaks as CRLF; they are stored as LF like the testimony."""
    return value.replace("\r\n", "\n").replace("\r", "\n") if isinstance(value, str) else value
