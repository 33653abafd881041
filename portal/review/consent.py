"""The witness's consent, as `forward` enforces it.

Every submission made with a questionnaire carries the witness's answer to
the `consent` question: `yes` (may be passed to courts and UN bodies),
`anonymous` (only without their name and identifying details), `ask` (ask
them first) or `no`. A submission without an answer (older ones, made
before the questionnaire) counts as `ask`. Only `yes`, and `anonymous` with
every identifying answer left out, are forwarded without an override; an
override needs a reason, which the custody log and the bundle record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from portal.core.manifest import Manifest, ManifestError, parse_manifest
from portal.core.questionnaire import CONSENT_DEFAULT, CONSENT_ID, Consent
from portal.review.record import MANIFEST_JSON

_ANSWERS = {answer.value: answer for answer in Consent}


class ConsentRefused(Exception):
    """A submission's consent does not allow this forward; nothing was sent."""


@dataclass(frozen=True)
class ConsentDecision:
    submission: str
    consent: Consent
    # True when the witness gave no (valid) answer and `consent` is the default.
    assumed: bool
    override_reason: str | None = None

    def as_record(self) -> dict[str, object]:
        record: dict[str, object] = {
            "submission": self.submission,
            "consent": self.consent.value,
        }
        if self.assumed:
            record["consent_answer"] = None
        if self.override_reason is not None:
            record["override_reason"] = self.override_reason
        return record


def consent_of(manifest: Manifest) -> tuple[Consent, bool]:
    """The consent answer and whether it was assumed (no valid answer in the manifest)."""
    answer = _ANSWERS.get(manifest.fields.get(CONSENT_ID, ""))
    if answer is not None:
        return answer, False
    return CONSENT_DEFAULT, True


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
) -> ConsentDecision:
    """Whether this submission may go out as asked.

    Raises:
        ConsentRefused: the consent does not allow it and there is no override.
    """
    consent, assumed = consent_of(manifest)
    given = (
        f"consent {consent.value!r} ({consent.meaning})"
        if not assumed
        else f"no consent answer (counts as {consent.value!r}: {consent.meaning})"
    )
    if consent == Consent.YES:
        return ConsentDecision(submission_id, consent, assumed)
    if consent == Consent.ANONYMOUS:
        kept = sorted(set(identifying_answers(manifest)) - set(omit_fields))
        if not kept:
            return ConsentDecision(submission_id, consent, assumed)
        problem = (
            f"submission {submission_id} has {given}, but its identifying answers "
            f"{', '.join(map(repr, kept))} would be sent. Leave them out with "
            f"{' '.join('--omit-field ' + name for name in kept)}"
        )
    else:
        problem = f"submission {submission_id} has {given}"
    if override_reason is not None:
        return ConsentDecision(submission_id, consent, assumed, override_reason)
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
    for submission_id in sorted(set(submission_ids)):
        path = from_dir / submission_id / MANIFEST_JSON
        try:
            manifest = parse_manifest(path.read_bytes())
        except (OSError, ManifestError) as exc:
            raise ConsentRefused(f"{path} cannot be read: {exc}") from None
        try:
            decisions.append(decide(manifest, submission_id, omit_fields, override_reason))
        except ConsentRefused as exc:
            refused.append(str(exc))
    if len(refused) == 1:
        raise ConsentRefused(refused[0])
    if refused:
        first = refused[0].split(". Nothing was sent.", 1)
        others = "; ".join(r.split(". Nothing was sent.", 1)[0] for r in refused[1:])
        raise ConsentRefused(f"{first[0]}; {others}. Nothing was sent.{first[1]}")
    return decisions


def bundle_note(decisions: Sequence[ConsentDecision]) -> str:
    """The bundle README's paragraph on consent: each answer, and every override with its reason."""
    lines = ["Consent given by each witness to passing on their testimony:"]
    for decision in decisions:
        answer = (
            decision.consent.value
            if not decision.assumed
            else f"none given (counts as {CONSENT_DEFAULT.value})"
        )
        lines.append(f"  {decision.submission}: {answer}")
        if decision.override_reason is not None:
            lines.append(f"    SENT WITHOUT THAT CONSENT, reason given: {decision.override_reason}")
    return "\n".join(lines) + "\n"
