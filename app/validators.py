"""Validators the forms share: a field is bounded by the column it lands in, and a
new password must resist guessing."""
from __future__ import annotations

from wtforms.validators import Length, ValidationError
from zxcvbn import zxcvbn
from zxcvbn.frequency_lists import FREQUENCY_LISTS

PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_LENGTH = 128  # hashing cost stays bounded
_ZXCVBN_MAX_LENGTH = 72  # the library refuses longer input; a longer prefix decides nothing
# zxcvbn's ranked list of the 30,000 most common passwords (lower-cased).
COMMON_PASSWORDS = frozenset(FREQUENCY_LISTS["passwords"])


def at_most(limit: int) -> Length:
    return Length(max=limit, message=f"This can be at most {limit} characters long.")


def fits(column) -> Length:
    """A Length validator for a field stored in `column` (a mapped String column), so the
    form refuses with a message what the database would refuse with an error."""
    return at_most(column.type.length)


def long_enough_password() -> Length:
    return Length(min=PASSWORD_MIN_LENGTH,
                  message=f"Use at least {PASSWORD_MIN_LENGTH} characters for your password.")


class NotCommonPassword:
    """Refuses a password among the common ones, or one guessable in under a thousand
    tries (repeats like "aaaaaaaaaa", sequences like "0123456789", the shopper's own
    email or name), which is what a guessing attacker tries first."""

    message = "This password is too common or too easy to guess. Choose another."

    def __call__(self, form, field) -> None:
        password = field.data or ""
        if not password:
            return
        own_words = [getattr(form, name).data or "" for name in ("email", "name")
                     if hasattr(form, name)]
        if (password.lower() in COMMON_PASSWORDS
                or zxcvbn(password[:_ZXCVBN_MAX_LENGTH], user_inputs=own_words)["score"] == 0):
            raise ValidationError(self.message)
