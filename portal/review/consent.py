"""The witness's consent, as `forward` enforces it.

Every submission made with a questionnaire carries the witness's answer to
the `consent` question: `yes` (may be passed to courts and UN bodies),
`anonymous` (only without their name and identifying details), `ask` (ask
them first) or `no`. A submission without an answer (older ones, made
before the questionnaire) counts as `ask`. Only `yes`, and `anonymous` with
every identifying answer left out, are forwarded without an override; an
override needs a reason, which the custody log and the bundle record.

A follow-up sent with a receipt asks consent again and offers one more
answer, `same` ("the same as I answered before"). The server cannot read the
earlier answer, so it is resolved here, from the conversation: the other
submissions of the same thread in the opened folder. The latest earlier
answer counts; submissions carry only their day, so when answers of that
day differ the most careful of them counts, and with no earlier answer in
the folder a `same` counts as `ask`.

The consent question's words and the `identifying` flags are sealed in the
manifest by the server, so a crafted manifest could relabel them (show `yes`
as "never pass this on", or mark nothing identifying). They are trusted only
when the sealed questionnaire is one the organisation knows: its SHA-256 is
that of the shipped default or of a file given to the reviewer's tool
(`--questionnaire`, `TESTIMONY_REVIEW_QUESTIONNAIRES`), and every sealed
question is exactly what that file (or its follow-up form) shows in the
sealed language. Otherwise the answer counts as `ask` and the reason is
said (issue 21).
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from portal.core.manifest import Manifest, ManifestError, SealedQuestion, parse_manifest
from portal.core.questionnaire import (
    CONSENT_DEFAULT,
    CONSENT_ID,
    CONSENT_SAME,
    DEFAULT_QUESTIONNAIRE,
    Consent,
    Questionnaire,
    QuestionnaireError,
    load_questionnaire,
)
from portal.review.record import MANIFEST_JSON

_ANSWERS = {answer.value: answer for answer in Consent}
# From the most careful answer to the least: where answers of one day differ,
# the first of them in this order counts.
_CAREFUL_FIRST = (Consent.NO, Consent.ASK, Consent.ANONYMOUS, Consent.YES)


class ConsentRefused(Exception):
    """A submission's consent does not allow this forward; nothing was sent."""


class ConsentRelabelled(ConsentRefused):
    """A sealed questionnaire claims a known file's SHA-256 but shows other words: tampering."""


class QuestionnaireFileError(Exception):
    """A questionnaire given to the reviewer's tool cannot be read; the message names it."""


# Why a consent answer was not trusted (the table's `questionnaire_known`).
KNOWN = "yes"
UNKNOWN = "unknown"
RELABELLED = "relabelled"
NO_QUESTIONNAIRE = "none"


def _languages_of(path: Path) -> tuple[str, ...]:
    """The languages a questionnaire file gives its first question's label in."""
    try:
        document = tomllib.loads(path.read_text("utf-8"))
        label = document["questions"][0]["label"]
        return tuple(label) if isinstance(label, dict) else ("en",)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, IndexError, TypeError):
        return ("en",)


def _load(path: Path) -> Questionnaire:
    try:
        return load_questionnaire(path, _languages_of(path))
    except QuestionnaireError as exc:
        raise QuestionnaireFileError(str(exc)) from None


class KnownQuestionnaires:
    """The questionnaires the organisation knows, by the SHA-256 of their file."""

    def __init__(self, questionnaires: Iterable[Questionnaire]) -> None:
        self.by_sha256 = {q.sha256: q for q in questionnaires}

    @classmethod
    def load(cls, paths: Iterable[Path] = ()) -> KnownQuestionnaires:
        """The shipped default and every file given (a folder gives its `*.toml` files).

        Raises:
            QuestionnaireFileError: a file is not a valid questionnaire.
        """
        found = [_default()]
        for path in paths:
            files = sorted(Path(path).glob("*.toml")) if Path(path).is_dir() else [Path(path)]
            found.extend(_load(file) for file in files)
        return cls(found)

    def vouch(self, manifest: Manifest) -> str:
        """KNOWN, or why the sealed questions are not trusted (UNKNOWN, RELABELLED, NO_...).

        A submission seals only the questions its witness was asked (a path
        of the questionnaire, or a follow-up's), so each sealed question must
        be one of the known file's, or of its follow-up form, word for word.
        """
        sealed = manifest.questionnaire
        if sealed is None:
            return NO_QUESTIONNAIRE
        known = self.by_sha256.get(sealed.sha256)
        if known is None:
            return UNKNOWN
        if (sealed.id, sealed.version) != (known.id, known.version):
            return RELABELLED
        try:
            allowed: dict[str, list[SealedQuestion]] = {}
            for form in (known, known.followup()):
                for question in form.sealed(sealed.language).questions:
                    allowed.setdefault(question.id, []).append(question)
        except KeyError:  # a language the file does not have
            return RELABELLED
        ok = all(q in allowed.get(q.id, []) for q in sealed.questions)
        return KNOWN if ok else RELABELLED


@functools.cache
def _default() -> Questionnaire:
    return _load(DEFAULT_QUESTIONNAIRE)


def default_known() -> KnownQuestionnaires:
    return KnownQuestionnaires([_default()])


@dataclass(frozen=True)
class ConsentDecision:
    submission: str
    consent: Consent
    # True when the witness gave no (valid) answer and `consent` is the default.
    assumed: bool
    override_reason: str | None = None
    # For a follow-up that answered "the same as before": the submissions of
    # the conversation whose answer it took.
    same_as: tuple[str, ...] = ()
    # Why the sealed questionnaire was not trusted (UNKNOWN, RELABELLED), if so.
    questionnaire: str = KNOWN

    def as_record(self) -> dict[str, object]:
        record: dict[str, object] = {
            "submission": self.submission,
            "consent": self.consent.value,
        }
        if self.assumed:
            record["consent_answer"] = None
        if self.same_as:
            record["consent_answer"] = CONSENT_SAME
            record["same_as"] = list(self.same_as)
        if self.questionnaire in (UNKNOWN, RELABELLED):
            record["questionnaire"] = self.questionnaire
        if self.override_reason is not None:
            record["override_reason"] = self.override_reason
        return record


def consent_of(
    manifest: Manifest, known: KnownQuestionnaires | None = None
) -> tuple[Consent, bool]:
    """The consent answer and whether it was assumed.

    Assumed (`ask`) when the manifest has no valid answer, or its sealed
    questionnaire is not one the organisation knows exactly (`known`, the
    shipped default when not given). A follow-up's "the same as before" is
    not an answer on its own: see `resolve_same`.
    """
    known = known or default_known()
    answer = _ANSWERS.get(manifest.fields.get(CONSENT_ID, ""))
    # The answer counts only if the witness was shown the known consent question.
    asked = manifest.questionnaire is not None and any(
        q.id == CONSENT_ID for q in manifest.questionnaire.questions
    )
    if answer is not None and asked and known.vouch(manifest) == KNOWN:
        return answer, False
    return CONSENT_DEFAULT, True


def answered_same(manifest: Manifest) -> bool:
    """Whether a follow-up answered "the same as before", as its sealed question offered it."""
    if manifest.fields.get(CONSENT_ID) != CONSENT_SAME or manifest.questionnaire is None:
        return False
    question = next((q for q in manifest.questionnaire.questions if q.id == CONSENT_ID), None)
    return question is not None and any(c.id == CONSENT_SAME for c in question.choices)


@dataclass(frozen=True)
class Resolved:
    """A consent as it counts: the answer, whether it was assumed, and where it came from."""

    consent: Consent
    assumed: bool
    same_as: tuple[str, ...] = ()


def resolve_same(
    manifest: Manifest,
    conversation: Sequence[Manifest],
    known: KnownQuestionnaires | None = None,
) -> Resolved:
    """The consent of `manifest`, with "the same as before" taken from its conversation.

    `conversation` holds the other opened submissions (any thread; those of
    other threads are ignored). The answer of the latest earlier day counts;
    if that day's answers differ, the most careful one.
    """
    known = known or default_known()
    if not answered_same(manifest) or known.vouch(manifest) != KNOWN:
        consent, assumed = consent_of(manifest, known)
        return Resolved(consent, assumed)
    thread = [m for m in conversation if m.thread == manifest.thread and m.id != manifest.id]
    # Another "same" of the same day may have been sent after this one: it is
    # not "before". Days are ISO dates, so they compare as text.
    earlier = [
        m
        for m in thread
        if m.received < manifest.received
        or (m.received == manifest.received and not answered_same(m))
    ]
    answers: dict[Consent, list[str]] = {}
    latest = max((m.received for m in earlier), default="")
    for member in earlier:
        if member.received != latest:
            continue
        resolved = resolve_same(member, thread, known)
        if not resolved.assumed:
            answers.setdefault(resolved.consent, []).append(member.id)
    if not answers:
        return Resolved(CONSENT_DEFAULT, True)
    consent = next(answer for answer in _CAREFUL_FIRST if answer in answers)
    return Resolved(consent, False, tuple(sorted(answers[consent])))


def identifying_answers(manifest: Manifest, known: KnownQuestionnaires | None = None) -> list[str]:
    """Field names holding answers to questions the organisation's questionnaire marks identifying.

    The flags come from the known file, not from what was sealed; for an
    unknown questionnaire every answered question counts as identifying.
    """
    sealed = manifest.questionnaire
    if sealed is None:
        return []
    trusted = (known or default_known()).by_sha256.get(sealed.sha256)
    if trusted is None:
        return [q.id for q in sealed.questions if manifest.fields.get(q.id)]
    return [q.id for q in trusted.questions if q.identifying and manifest.fields.get(q.id)]


def decide(
    manifest: Manifest,
    submission_id: str,
    omit_fields: Iterable[str],
    override_reason: str | None,
    conversation: Sequence[Manifest] = (),
    *,
    known: KnownQuestionnaires | None = None,
) -> ConsentDecision:
    """Whether this submission may go out as asked.

    `conversation` holds the other opened submissions, from which a
    follow-up's "the same as before" is resolved.

    Raises:
        ConsentRefused: the consent does not allow it and there is no override.
    """
    known = known or default_known()
    resolved = resolve_same(manifest, conversation, known)
    consent, assumed, same_as = resolved.consent, resolved.assumed, resolved.same_as
    vouched = known.vouch(manifest)
    why = {
        UNKNOWN: "its questionnaire is not one you know (its SHA-256 is not that of the "
        "default or of a file given with --questionnaire)",
        RELABELLED: "its sealed questions differ from the known questionnaire of that "
        "SHA-256 (they were relabelled)",
    }.get(vouched)
    questionnaire = vouched if vouched in (UNKNOWN, RELABELLED) else KNOWN
    if why is not None and manifest.fields.get(CONSENT_ID):
        given = f"a consent answer that cannot be trusted: {why} (counts as {consent.value!r})"
    elif same_as:
        given = (
            f"consent 'same as before', which is {consent.value!r} ({consent.meaning}) "
            f"as answered in {', '.join(same_as)}"
        )
    elif answered_same(manifest):
        given = (
            "consent 'same as before', but no earlier answer of this conversation is in the "
            f"folder (counts as {consent.value!r}: {consent.meaning}; open the conversation's "
            "first submission into the same folder to resolve it)"
        )
    elif not assumed:
        given = f"consent {consent.value!r} ({consent.meaning})"
    else:
        given = f"no consent answer (counts as {consent.value!r}: {consent.meaning})"
    if consent == Consent.YES:
        return ConsentDecision(
            submission_id, consent, assumed, same_as=same_as, questionnaire=questionnaire
        )
    if consent == Consent.ANONYMOUS:
        kept = sorted(set(identifying_answers(manifest, known)) - set(omit_fields))
        if not kept:
            return ConsentDecision(
                submission_id, consent, assumed, same_as=same_as, questionnaire=questionnaire
            )
        problem = (
            f"submission {submission_id} has {given}, but its identifying answers "
            f"{', '.join(map(repr, kept))} would be sent. Leave them out with "
            f"{' '.join('--omit-field ' + name for name in kept)}"
        )
    else:
        problem = f"submission {submission_id} has {given}"
    if override_reason is not None:
        return ConsentDecision(
            submission_id, consent, assumed, override_reason, same_as, questionnaire
        )
    refusal = ConsentRelabelled if vouched == RELABELLED else ConsentRefused
    raise refusal(
        f"{problem}. Nothing was sent. Only if you have the witness's consent some other way, "
        "give --override-consent REASON (the reason is recorded in the custody log and the "
        "bundle)"
    )


def check_folder(
    from_dir: Path,
    submission_ids: Sequence[str],
    omit_fields: Sequence[str],
    override_reason: str | None,
    *,
    known: KnownQuestionnaires | None = None,
) -> list[ConsentDecision]:
    """`decide` for each opened submission; all of them are checked before any is refused.

    Raises:
        ConsentRefused: naming every submission whose consent does not allow it.
    """
    decisions = []
    refused = []
    relabelled = False
    conversation = _opened_manifests(from_dir)
    for submission_id in sorted(set(submission_ids)):
        path = from_dir / submission_id / MANIFEST_JSON
        try:
            manifest = parse_manifest(path.read_bytes())
        except (OSError, ManifestError) as exc:
            raise ConsentRefused(f"{path} cannot be read: {exc}") from None
        try:
            decisions.append(
                decide(
                    manifest, submission_id, omit_fields, override_reason, conversation, known=known
                )
            )
        except ConsentRefused as exc:
            refused.append(str(exc))
            relabelled |= isinstance(exc, ConsentRelabelled)
    refusal = ConsentRelabelled if relabelled else ConsentRefused
    if len(refused) == 1:
        raise refusal(refused[0])
    if refused:
        first = refused[0].split(". Nothing was sent.", 1)
        others = "; ".join(r.split(". Nothing was sent.", 1)[0] for r in refused[1:])
        raise refusal(f"{first[0]}; {others}. Nothing was sent.{first[1]}")
    return decisions


def _opened_manifests(from_dir: Path) -> list[Manifest]:
    """Every readable manifest opened into `from_dir`: the conversations "same" is resolved in.

    One that cannot be read is left out here; it is refused by name if it
    is one of those being forwarded.
    """
    manifests = []
    for path in sorted(from_dir.glob(f"*/{MANIFEST_JSON}")):
        try:
            manifests.append(parse_manifest(path.read_bytes()))
        except (OSError, ManifestError):
            continue
    return manifests


def bundle_note(decisions: Sequence[ConsentDecision]) -> str:
    """The bundle README's paragraph on consent: each answer, and every override with its reason."""
    lines = ["Consent given by each witness to passing on their testimony:"]
    for decision in decisions:
        answer = (
            decision.consent.value
            if not decision.assumed
            else f"none given (counts as {CONSENT_DEFAULT.value})"
        )
        if decision.same_as:
            answer += f" (answered 'the same as before': as in {', '.join(decision.same_as)})"
        lines.append(f"  {decision.submission}: {answer}")
        if decision.override_reason is not None:
            lines.append(f"    SENT WITHOUT THAT CONSENT, reason given: {decision.override_reason}")
    return "\n".join(lines) + "\n"
