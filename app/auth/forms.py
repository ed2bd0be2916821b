from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, Email, EqualTo

from app.models import User
from app.validators import (PASSWORD_MAX_LENGTH, NotCommonPassword, at_most, fits,
                            long_enough_password)


class RegisterForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), fits(User.name)])
    email = EmailField("Email", validators=[DataRequired(), fits(User.email),
                                            Email(check_deliverability=False)])
    password = PasswordField("Password", validators=[
        DataRequired(), long_enough_password(), at_most(PASSWORD_MAX_LENGTH), NotCommonPassword()])
    confirm = PasswordField("Confirm password",
                            validators=[DataRequired(), EqualTo("password", "Passwords differ.")])
    submit = SubmitField("Create account")


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), fits(User.email),
                                            Email(check_deliverability=False)])
    password = PasswordField("Password", validators=[DataRequired(), at_most(PASSWORD_MAX_LENGTH)])
    submit = SubmitField("Sign in")
