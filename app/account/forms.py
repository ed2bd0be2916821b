from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SubmitField
from wtforms.validators import DataRequired

from app.validators import PASSWORD_MAX_LENGTH, at_most


class DeleteAccountForm(FlaskForm):
    """Deleting an account asks for the password and an explicit tick."""

    password = PasswordField("Your password",
                             validators=[DataRequired(), at_most(PASSWORD_MAX_LENGTH)])
    confirm = BooleanField("I understand my plan ends now and this cannot be undone",
                           validators=[DataRequired()])
    submit = SubmitField("Delete my account")
