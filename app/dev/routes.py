"""Development helpers (registered only when TIFFIN_ENV=development)."""
from flask import Blueprint, current_app, render_template

from app.services.notifications import dev_mailbox

bp = Blueprint("dev", __name__, url_prefix="/dev")


@bp.get("/mailbox")
def mailbox():
    """The emails the shop has sent, as shoppers get them (newest first)."""
    return render_template("dev/mailbox.html", messages=dev_mailbox(),
                           smtp=None if current_app.config["DEV_MAILBOX"] else
                           f'{current_app.config["MAIL_SERVER"]}:{current_app.config["MAIL_PORT"]}')
