"""The page at `/`: calculate, and follow the recent tasks; its templates and static files live beside it."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template

from app.store.models import OPEN_STATUSES, STATUSES

# The blueprint owns the package's templates and static files, which the dashboard and the docs use too.
bp = Blueprint("page", __name__, template_folder="templates", static_folder="static", static_url_path="/static")


@bp.get("/")
def index():
    """Render the calculator and the list of recent tasks."""
    config = current_app.extensions["dalc"].config
    return render_template(
        "index.html",
        statuses=STATUSES,
        open_statuses=OPEN_STATUSES,
        max_batch_size=config.max_batch_size,
        max_wait_seconds=int(config.max_wait_seconds),
        auth_required=config.auth == "required",
    )
