"""Forms of the operator console. Every POST form carries the CSRF token (Flask-WTF)."""
from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, HiddenField, IntegerField, SelectField, StringField
from wtforms.validators import DataRequired, Email, Length, NumberRange, Optional

from app.models.webhook import EVENT_STATUSES


class RepairForm(FlaskForm):
    confirm = HiddenField(default="yes")
    email = StringField("Email of the user who really paid",
                        validators=[Optional(), Email(), Length(max=254)])


class RefundForm(FlaskForm):
    amount_minor = IntegerField("Amount in minor units (paise); leave empty to refund everything "
                                "not yet refunded", validators=[Optional(), NumberRange(min=1)])
    confirm_reference = StringField("Type the order reference to confirm",
                                    validators=[DataRequired(), Length(max=32)])


class WebhookFilterForm(FlaskForm):
    """GET filters of the inbox (no CSRF: it changes nothing)."""

    class Meta:
        csrf = False

    gateway = SelectField("Gateway", choices=[("", "any"), ("test", "test"), ("stripe", "stripe"),
                                              ("razorpay", "razorpay")], validators=[Optional()])
    status = SelectField("Status", choices=[("", "any")] + [(s, s) for s in EVENT_STATUSES],
                         validators=[Optional()])
    event_type = StringField("Event type", validators=[Optional(), Length(max=100)])
    since = DateTimeLocalField("From (UTC)", format="%Y-%m-%dT%H:%M", validators=[Optional()])
    until = DateTimeLocalField("To (UTC)", format="%Y-%m-%dT%H:%M", validators=[Optional()])
    page = IntegerField(default=1, validators=[Optional(), NumberRange(min=1, max=100000)])
