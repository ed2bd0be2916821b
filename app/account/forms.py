from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SubmitField
from wtforms.validators import DataRequired


class DeleteAccountForm(FlaskForm):
    """Deleting an account asks for the password and an explicit tick."""

    password = PasswordField("Your password", validators=[DataRequired()])
    confirm = BooleanField("I understand my plan ends now and this cannot be undone",
                           validators=[DataRequired()])
    submit = SubmitField("Delete my account")
