"""The witness's consent, as `forward` enforces it.

Every submission made with a questionnaire carries the witness's answer to
the `consent` question: `yes` (may be passed to courts and UN bodies),
`anonymous` (only without their name and identifying details), `ask` (ask
them first) or `no`. A submission without an answer (older ones, made
before the questionnaire) counts as `ask`. Only `yes`, and `anonymous` with
every identifying answer left out, are forwarded without an override; an
override needs a reason, which the custody log and the bundle record.

The consent question's words and the `identifying` flags are sealed in the
manifest by the server, so a crafted manifest could relabel them (show `yes`
as "never pass this on", or mark nothing identifying). They are trusted only
when the sealed questionnaire is one the organisation knows: its SHA-256 is
that of the shipped default or of a file given to the reviewer's tool
(`--questionnaire`, `TESTIMONY_REVIEW_QUESTIONNAIRES`), and what was sealed
is exactly what that file shows in the sealed language. Otherwise the
answer counts as `ask` and the reason is said (issue 21).
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from portal.core.manifest import Manifest, ManifestError, parse_manifest
from portal.core.questionnaire import (
    CONSENT_DEFAULT,
    CONSENT_ID,
    DEFAULT_QUESTIONNAIRE,
    Consent,
    Questionnaire,
    QuestionnaireError,
    load_questionnaire,
)
from portal.review.record import MANIFEST_JSON

_ANSWERS = {answer.value: answer for answer in Consent}


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
        """KNOWN, or why the sealed questions are not trusted (UNKNOWN, RELABELLED, NO_...)."""
        sealed = manifest.questionnaire
        if sealed is None:
            return NO_QUESTIONNAIRE
        known = self.by_sha256.get(sealed.sha256)
        if known is None:
            return UNKNOWN
        try:
            expected = known.sealed(sealed.language)
        except KeyError:  # a language the file does not have
            return RELABELLED
        return KNOWN if expected == sealed else RELABELLED


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
    # Why the sealed questionnaire was not trusted (UNKNOWN, RELABELLED), if so.
    questionnaire: str = KNOWN

    def as_record(self) -> dict[str, object]:
        record: dict[str, object] = {
            "submission": self.submission,
            "consent": self.consent.value,
        }
        if self.assumed:
            record["consent_answer"] = None
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
    shipped default when not given).
    """
    known = known or default_known()
    answer = _ANSWERS.get(manifest.fields.get(CONSENT_ID, ""))
    if answer is not None and known.vouch(manifest) == KNOWN:
        return answer, False
    return CONSENT_DEFAULT, True


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
    *,
    known: KnownQuestionnaires | None = None,
) -> ConsentDecision:
    """Whether this submission may go out as asked.

    Raises:
        ConsentRefused: the consent does not allow it and there is no override.
    """
    known = known or default_known()
    consent, assumed = consent_of(manifest, known)
    vouched = known.vouch(manifest)
    why = {
        UNKNOWN: "its questionnaire is not one you know (its SHA-256 is not that of the "
        "default or of a file given with --questionnaire)",
        RELABELLED: "its sealed questions differ from the known questionnaire of that "
        "SHA-256 (they were relabelled)",
    }.get(vouched)
    if why is not None and manifest.fields.get(CONSENT_ID):
        given = f"a consent answer that cannot be trusted: {why} (counts as {consent.value!r})"
    elif not assumed:
        given = f"consent {consent.value!r} ({consent.meaning})"
    else:
        given = f"no consent answer (counts as {consent.value!r}: {consent.meaning})"
    questionnaire = vouched if vouched in (UNKNOWN, RELABELLED) else KNOWN
    if consent == Consent.YES:
        return ConsentDecision(submission_id, consent, assumed, questionnaire=questionnaire)
    if consent == Consent.ANONYMOUS:
        kept = sorted(set(identifying_answers(manifest, known)) - set(omit_fields))
        if not kept:
            return ConsentDecision(submission_id, consent, assumed, questionnaire=questionnaire)
        problem = (
            f"submission {submission_id} has {given}, but its identifying answers "
            f"{', '.join(map(repr, kept))} would be sent. Leave them out with "
            f"{' '.join('--omit-field ' + name for name in kept)}"
        )
    else:
        problem = f"submission {submission_id} has {given}"
    if override_reason is not None:
        return ConsentDecision(
            submission_id, consent, assumed, override_reason, questionnaire=questionnaire
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
    for submission_id in sorted(set(submission_ids)):
        path = from_dir / submission_id / MANIFEST_JSON
        try:
            manifest = parse_manifest(path.read_bytes())
        except (OSError, ManifestError) as exc:
            raise ConsentRefused(f"{path} cannot be read: {exc}") from None
        try:
            decisions.append(
                decide(manifest, submission_id, omit_fields, override_reason, known=known)
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
