from flask_wtf import FlaskForm
from wtforms import HiddenField, RadioField, SubmitField
from wtforms.validators import DataRequired, Optional

from app.models import Order
from app.validators import fits


class CheckoutForm(FlaskForm):
    gateway = RadioField("Pay with", validators=[DataRequired(), fits(Order.gateway)],
                         validate_choice=False)
    # One-time token so a double-clicked submit reuses the first checkout.
    checkout_token = HiddenField("Checkout token", validators=[Optional(), fits(Order.checkout_token)])
    submit = SubmitField("Continue to payment")

    def refusal_code(self) -> str:
        """The error code for an invalid submit: no usable gateway named, or a damaged form."""
        return "GATEWAY_NOT_CONFIGURED" if set(self.errors) == {"gateway"} else "FORM_INVALID"

    def error_summary(self) -> str:
        return " ".join(f"{getattr(self, name).label.text}: {' '.join(messages)}"
                        for name, messages in self.errors.items())


class ActionForm(FlaskForm):
    """A button that changes something: carries only the CSRF token."""
