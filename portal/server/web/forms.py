"""The submission form."""

from __future__ import annotations

import functools
import weakref
from typing import Any

from babel.support import NullTranslations, Translations
from flask import current_app
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import HiddenField, MultipleFileField, StringField, TextAreaField
from wtforms.i18n import messages_path
from wtforms.validators import Length, Optional, ValidationError

from portal.server.web.onetime import FormSigner, FormValue, InvalidFormValue


@functools.lru_cache(maxsize=8)
def _wtforms_catalogue(locale: str) -> NullTranslations:
    # NullTranslations when WTForms has no catalogue for the language: its
    # messages then stay in English.
    return Translations.load(messages_path(), [locale], domain="wtforms")


class _PageLanguageMessages:
    """WTForms' messages in the page's language, looked up when the first one is needed.

    A form that is sent back valid shows no message; looking up the
    language for it anyway was about a quarter of the time it took to make
    the form (cProfile, in process).
    """

    def __init__(self) -> None:
        self._catalogue: NullTranslations | None = None

    def _messages(self) -> NullTranslations:
        if self._catalogue is None:
            self._catalogue = _wtforms_catalogue(str(get_locale()))
        return self._catalogue

    def gettext(self, string: str) -> str:
        return self._messages().gettext(string)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self._messages().ngettext(singular, plural, n)


class TextOnlyAreaField(TextAreaField):
    """A text area that ignores a file part sent under its name, with line breaks as LF.

    Flask-WTF mixes file parts into the form data, so a hostile client can
    send `testimony` as a file; validators that expect text would then fail
    with a TypeError (a 500). A browser never does this; the file is still
    kept as an attachment like any other.

    Browsers send line breaks as CRLF but count them as one character
    against `maxlength`; the text is normalised to LF before it is counted
    and stored, so the limit the witness's browser enforces is ours.
    """

    def process_formdata(self, valuelist: list[Any]) -> None:
        text = [_lf(value) for value in valuelist if isinstance(value, str)]
        super().process_formdata(text)


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


class TextOnlyField(StringField):
    """A one-line text field that ignores a file part sent under its name."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        super().process_formdata([value for value in valuelist if isinstance(value, str)])


class TextOnlyHiddenField(HiddenField):
    """A hidden field that ignores a file part sent under its name."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        super().process_formdata([value for value in valuelist if isinstance(value, str)])


class SubmissionForm(FlaskForm):
    class Meta:
        # CSRFProtect (portal.server.web.extensions) checks the token of
        # every POST before any view runs, and the pages draw it with
        # `csrf_token()`. A CSRF field of the form's own would only make a
        # new signed token for every submission, and never be drawn.
        csrf = False

        def bind_field(self, form: Any, unbound_field: Any, options: Any) -> Any:
            # Each field refers to its form weakly. WTForms' strong reference
            # makes every form a reference cycle, and what the form holds (the
            # files' parts, their sinks and staged files) was then freed only
            # by the garbage collector, not when the request ended: under load
            # that was most of what a worker's collector found (docs/BENCHMARKS.md,
            # round 7). The view holds the form for as long as its fields are
            # used.
            return super().bind_field(weakref.proxy(form), unbound_field, options)  # type: ignore[misc]

        def get_translations(self, form: Any) -> Any:
            if not current_app.config.get("WTF_I18N_ENABLED", True):
                # WTForms builds the form's Meta from every Meta in the form's
                # MRO, so super() reaches Flask-WTF's; mypy sees a bare class.
                return super().get_translations(form)  # type: ignore[misc]
            # WTForms' own messages in the page's language, each catalogue
            # parsed once (Flask-WTF parsed it again for every form, which
            # cost more than the rest of drawing the form's fields), and the
            # page's language looked up once per form, not once per message.
            return _PageLanguageMessages()

    testimony = TextOnlyAreaField(_l("Your testimony"))
    attachments = MultipleFileField(_l("Files (optional)"))
    # A honeypot: hidden from sighted people by CSS and labelled "leave
    # empty" for screen readers; simple bots fill in every field they find.
    # No Optional() here: it would skip the check below for a value that is
    # only white space, and a honeypot must refuse anything at all.
    website = TextOnlyField(_l("Leave this field empty"))
    # The one-time value that makes each form store at most one submission
    # (see portal/server/web/onetime.py); checked and claimed by the view.
    # Never shown, so it has no label (WTForms would translate one made from its name).
    form_id = TextOnlyHiddenField(label="")

    def __init__(self, *args: Any, max_chars: int, signer: FormSigner, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_chars = max_chars
        self._signer = signer
        self.once: FormValue | None = None
        self.testimony.validators = [
            Optional(),
            Length(
                max=max_chars,
                # WTForms fills in %(max)d itself.
                message=_l(
                    "Your testimony is longer than %(max)d characters. "
                    "Please shorten it, or attach it as a file."
                ),
            ),
        ]

    def validate_website(self, field: StringField) -> None:
        if field.data:
            raise ValidationError(_l("Leave this field empty."))

    # Set by the view: the witness wrote an answer to another question.
    answered_other_questions = False

    def has_content(self) -> bool:
        text = (self.testimony.data or "").strip()
        files = [f for f in (self.attachments.data or []) if getattr(f, "filename", "")]
        return bool(text or files or self.answered_other_questions)

    def validate_form_id(self, field: HiddenField) -> None:
        try:
            self.once = self._signer.verify(field.data)
        except InvalidFormValue:
            raise ValidationError(
                _l("This form is incomplete or too old. Please open the form again.")
            ) from None

    def validate(self, extra_validators: Any = None) -> bool:
        valid: bool = super().validate(extra_validators)
        if valid and not self.has_content():
            self.testimony.errors = [_l("Please write your testimony or attach a file.")]
            return False
        return valid

    def fresh(self) -> SubmissionForm:
        """This form, to be drawn again: with a new one-time value."""
        return self.with_once(self._signer.issue())

    def with_once(self, form_id: str) -> SubmissionForm:
        """This form, to be drawn with the one-time value `form_id` (from the signer)."""
        self.form_id.data = form_id
        return self


class ReceiptField(TextOnlyField):
    """The receipt as typed; checked (never derived from) by the form."""


def _check_receipt(form: FlaskForm, field: StringField) -> None:
    # Imported here so the forms module stays light for the submission form.
    from portal.core.receipt import ReceiptError, parse_receipt

    try:
        parse_receipt(field.data or "")
    except ReceiptError as exc:
        if exc.group is not None:
            raise ValidationError(
                _l(
                    "Group %(n)s of the receipt has a mistake. Check it against "
                    "what you wrote down.",
                    n=exc.group,
                )
            ) from None
        raise ValidationError(
            _l("A receipt is 30 digits, in five groups of six. Check what you typed.")
        ) from None


class ReceiptForm(FlaskForm):
    receipt = ReceiptField(_l("Your receipt"), validators=[_check_receipt])


class ReplyDeleteForm(FlaskForm):
    receipt = ReceiptField()
    replies = TextOnlyField()

    def reply_ids(self) -> list[str]:
        return [part for part in (self.replies.data or "").split(",") if part][:1000]


class FollowupForm(SubmissionForm):
    receipt = ReceiptField()
