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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from portal.core.manifest import Manifest, ManifestError, parse_manifest
from portal.core.questionnaire import CONSENT_DEFAULT, CONSENT_ID, CONSENT_SAME, Consent
from portal.review.record import MANIFEST_JSON

_ANSWERS = {answer.value: answer for answer in Consent}
# From the most careful answer to the least: where answers of one day differ,
# the first of them in this order counts.
_CAREFUL_FIRST = (Consent.NO, Consent.ASK, Consent.ANONYMOUS, Consent.YES)


class ConsentRefused(Exception):
    """A submission's consent does not allow this forward; nothing was sent."""


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
        if self.override_reason is not None:
            record["override_reason"] = self.override_reason
        return record


def consent_of(manifest: Manifest) -> tuple[Consent, bool]:
    """The consent answer and whether it was assumed (no valid answer in the manifest).

    A follow-up's "the same as before" is not an answer on its own: see
    `resolve_same`.
    """
    answer = _ANSWERS.get(manifest.fields.get(CONSENT_ID, ""))
    if answer is not None:
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


def resolve_same(manifest: Manifest, conversation: Sequence[Manifest]) -> Resolved:
    """The consent of `manifest`, with "the same as before" taken from its conversation.

    `conversation` holds the other opened submissions (any thread; those of
    other threads are ignored). The answer of the latest earlier day counts;
    if that day's answers differ, the most careful one.
    """
    if not answered_same(manifest):
        consent, assumed = consent_of(manifest)
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
        resolved = resolve_same(member, thread)
        if not resolved.assumed:
            answers.setdefault(resolved.consent, []).append(member.id)
    if not answers:
        return Resolved(CONSENT_DEFAULT, True)
    consent = next(answer for answer in _CAREFUL_FIRST if answer in answers)
    return Resolved(consent, False, tuple(sorted(answers[consent])))


def identifying_answers(manifest: Manifest) -> list[str]:
    """Field names holding answers to questions the questionnaire marks identifying."""
    if manifest.questionnaire is None:
        return []
    return [qid for qid in manifest.questionnaire.identifying if manifest.fields.get(qid)]


def decide(
    manifest: Manifest,
    submission_id: str,
    omit_fields: Iterable[str],
    override_reason: str | None,
    conversation: Sequence[Manifest] = (),
) -> ConsentDecision:
    """Whether this submission may go out as asked.

    `conversation` holds the other opened submissions, from which a
    follow-up's "the same as before" is resolved.

    Raises:
        ConsentRefused: the consent does not allow it and there is no override.
    """
    resolved = resolve_same(manifest, conversation)
    consent, assumed, same_as = resolved.consent, resolved.assumed, resolved.same_as
    if same_as:
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
        return ConsentDecision(submission_id, consent, assumed, same_as=same_as)
    if consent == Consent.ANONYMOUS:
        kept = sorted(set(identifying_answers(manifest)) - set(omit_fields))
        if not kept:
            return ConsentDecision(submission_id, consent, assumed, same_as=same_as)
        problem = (
            f"submission {submission_id} has {given}, but its identifying answers "
            f"{', '.join(map(repr, kept))} would be sent. Leave them out with "
            f"{' '.join('--omit-field ' + name for name in kept)}"
        )
    else:
        problem = f"submission {submission_id} has {given}"
    if override_reason is not None:
        return ConsentDecision(submission_id, consent, assumed, override_reason, same_as)
    raise ConsentRefused(
        f"{problem}. Nothing was sent. Only if you have the witness's consent some other way, "
        "give --override-consent REASON (the reason is recorded in the custody log and the "
        "bundle)"
    )


def check_folder(
    from_dir: Path,
    submission_ids: Sequence[str],
    omit_fields: Sequence[str],
    override_reason: str | None,
) -> list[ConsentDecision]:
    """`decide` for each opened submission; all of them are checked before any is refused.

    Raises:
        ConsentRefused: naming every submission whose consent does not allow it.
    """
    decisions = []
    refused = []
    conversation = _opened_manifests(from_dir)
    for submission_id in sorted(set(submission_ids)):
        path = from_dir / submission_id / MANIFEST_JSON
        try:
            manifest = parse_manifest(path.read_bytes())
        except (OSError, ManifestError) as exc:
            raise ConsentRefused(f"{path} cannot be read: {exc}") from None
        try:
            decisions.append(
                decide(manifest, submission_id, omit_fields, override_reason, conversation)
            )
        except ConsentRefused as exc:
            refused.append(str(exc))
    if len(refused) == 1:
        raise ConsentRefused(refused[0])
    if refused:
        first = refused[0].split(". Nothing was sent.", 1)
        others = "; ".join(r.split(". Nothing was sent.", 1)[0] for r in refused[1:])
        raise ConsentRefused(f"{first[0]}; {others}. Nothing was sent.{first[1]}")
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
