"""Register, sign in, sign out."""
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from app.auth import throttle
from app.auth.forms import LoginForm, RegisterForm
from app.safe_redirect import safe_next
from app.services.accounts import EmailTaken, authenticate, register_user

bp = Blueprint("auth", __name__)


@bp.route("/register", methods=["GET", "POST"])
def register():
    """Create an account and sign in."""
    if current_user.is_authenticated:
        return redirect(url_for("storefront.index"))
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            user = register_user(form.email.data, form.name.data, form.password.data)
        except EmailTaken:
            form.email.errors.append("An account with this email already exists.")
        else:
            login_user(user)
            flash("Welcome to Tiffin! Pick a meal plan to get started.", "success")
            return redirect(safe_next(request.args.get("next"), url_for("storefront.index")))
    return render_template("auth/register.html", form=form), 200 if not form.errors else 400


@bp.route("/login", methods=["GET", "POST"])
@throttle.per_account
@throttle.per_address
def login():
    """Sign in. Unknown email and wrong password get the same answer (and both count)."""
    form = LoginForm()
    if form.validate_on_submit():
        user = authenticate(form.email.data, form.password.data)
        if user is not None:
            login_user(user)
            return redirect(safe_next(request.args.get("next"), url_for("account.index")))
        throttle.note_failed_login()
        form.password.errors.append("Email or password is incorrect.")
    return render_template("auth/login.html", form=form), 200 if not form.errors else 400


@bp.post("/logout")
@login_required
def logout():
    """Sign out."""
    logout_user()
    flash("You have been signed out.", "info")
    return redirect(url_for("storefront.index"))
