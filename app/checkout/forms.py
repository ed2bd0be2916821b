from flask_wtf import FlaskForm
from wtforms import HiddenField, RadioField, SubmitField
from wtforms.validators import DataRequired, Optional


class CheckoutForm(FlaskForm):
    gateway = RadioField("Pay with", validators=[DataRequired()], validate_choice=False)
    # One-time token so a double-clicked submit reuses the first checkout.
    checkout_token = HiddenField(validators=[Optional()])
    submit = SubmitField("Continue to payment")


class ActionForm(FlaskForm):
    """A button that changes something: carries only the CSRF token."""
