"""The task resource: create (one or a batch), read, wait, list and cancel."""
from __future__ import annotations

import hashlib
import json
import re

from flask import Blueprint, after_this_request, current_app, request, url_for

from app import store
from app.store import retention
from app.store.models import STATUSES, utcnow
from app.telemetry import tasks as task_events
from app.telemetry import tracing
from app.web import auth, rate_limit
from app.web.problems import ProblemError

bp = Blueprint("tasks", __name__, url_prefix="/tasks")
# Who is calling, then whether they may: a request refused here (401, 429) reaches no view.
bp.before_request(auth.authenticate)
bp.before_request(rate_limit.spend_one)

_MAX_ID = 2**63 - 1
_KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")
_ALLOWED_FIELDS = frozenset({"expression"})


def _runtime():
    return current_app.extensions["dalc"]


@bp.post("")
def create():
    """Create one task (object body) or many (list body) and hand them to the workers."""
    with _runtime().publisher.arriving():
        return _create()


def _create():
    config = _runtime().config
    body = _json_body()
    batch = isinstance(body, list)
    items = body if batch else [body]
    if batch and not items:
        raise ProblemError(400, "empty_batch", f"The list is empty; send 1 to {config.max_batch_size:,} tasks.")
    if batch and len(items) > config.max_batch_size:
        raise ProblemError(
            413, "batch_too_large", f"The list has {len(items)} tasks; send at most {config.max_batch_size}."
        )
    expressions = _expressions(items, batch, config.max_expression_length)
    idempotency = _idempotency(body, batch)
    rate_limit.spend_tasks(len(expressions))

    try:
        tasks, created = store.create_tasks(
            expressions,
            owner=auth.caller().owner,
            idempotency=idempotency,
            trace_id=tracing.current_trace_id(),
            insert=_runtime().inserter.insert,
        )
    except store.IdempotencyConflict:
        raise ProblemError(
            409, "idempotency_key_reused",
            "This Idempotency-Key was used before with a different body; use a new key for a new request.",
        ) from None
    except store.TasksExpired as exc:
        raise ProblemError(
            410, "task_expired",
            f"The task(s) this Idempotency-Key created ({', '.join(map(str, exc.ids))}) have expired and "
            "were deleted; send the request with a new key to run it again.",
        ) from None
    if created:
        _runtime().publisher.submit([t.id for t in tasks], tracing.current_context(), [t.expression for t in tasks],
                                    after_answer=_after_answer)
        task_events.accepted(tasks)
    status = 202 if created else 200
    if batch:
        return [t.to_dict() for t in tasks], status
    return tasks[0].to_dict(), status, {"Location": url_for("tasks.read", raw_id=tasks[0].id)}


@bp.get("")
def list_or_read():
    """List tasks newest first, or read one with `?id=` as the original dalc did."""
    if "id" in request.args:
        return read(request.args["id"])
    config = _runtime().config
    status = request.args.get("status") or None
    if status is not None and status.upper() not in STATUSES:
        raise _bad_query("status", f"status must be one of {', '.join(STATUSES)}.")
    limit = _int_arg("limit", default=config.default_page_size, low=1, high=config.max_page_size)
    before = _int_arg("before", default=None, low=1, high=_MAX_ID, name_in_detail="the cursor")
    tasks = store.list_tasks(
        status=status and status.upper(), limit=limit + 1, before=before, owner=auth.caller().scope
    )
    page, more = tasks[:limit], len(tasks) > limit
    return {"items": [t.to_dict() for t in page], "next": str(page[-1].id) if more else None}


@bp.get("/<raw_id>")
def read(raw_id: str):
    """Read one task, waiting up to `?wait=` seconds for it to become final."""
    task_id = _task_id(raw_id)
    wait = _wait_seconds()
    owner = auth.caller().scope
    if wait:
        task = store.wait_for_final(task_id, wait, owner=owner, pushed=_runtime().finals_pushed())
    else:
        task = store.get_task(task_id, owner=owner)
    if task is None:
        raise _missing(task_id)
    return task.to_dict()


@bp.post("/<raw_id>/cancel")
def cancel(raw_id: str):
    """Cancel a task that is not final yet."""
    task_id = _task_id(raw_id)
    task, cancelled = store.cancel_task(task_id, owner=auth.caller().scope)
    if task is None:
        raise _missing(task_id)
    if not cancelled:
        raise ProblemError(
            409, "task_final", f"Task {task_id} is already {task.status} and can no longer be cancelled."
        )
    return task.to_dict()


def _after_answer(work) -> None:
    """Run `work` in this thread once the answer is sent: the server closes the response after writing it."""

    @after_this_request
    def _register(response):
        response.call_on_close(work)
        return response


def _json_body():
    if not request.mimetype or not (request.mimetype == "application/json" or request.mimetype.endswith("+json")):
        raise ProblemError(
            415, "unsupported_media_type", "Send the body as JSON with Content-Type: application/json."
        )
    raw = request.get_data(cache=False)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProblemError(400, "invalid_json", f"The body is not valid UTF-8 JSON: {exc}.") from None
    except RecursionError:
        raise ProblemError(400, "invalid_json", "The body nests arrays or objects too deeply.") from None


def _expressions(items: list, batch: bool, max_length: int) -> list[str]:
    errors, too_long = [], False
    for index, item in enumerate(items):
        at = f"/{index}" if batch else ""
        if not isinstance(item, dict):
            errors.append({"pointer": at or "/", "detail": 'Each task must be an object like {"expression": "1 + 1"}.'})
            continue
        unknown = sorted(set(item) - _ALLOWED_FIELDS)
        if unknown:
            errors.append({"pointer": f"{at}/{unknown[0]}", "detail": f"Unknown field(s): {', '.join(unknown)}."})
        expression = item.get("expression")
        if "expression" not in item:
            errors.append({"pointer": f"{at}/expression", "detail": "The expression is missing."})
        elif not isinstance(expression, str):
            errors.append({"pointer": f"{at}/expression", "detail": "The expression must be a string."})
        elif not expression.strip():
            errors.append({"pointer": f"{at}/expression", "detail": "The expression is empty."})
        elif len(expression) > max_length:
            too_long = True
            errors.append({
                "pointer": f"{at}/expression",
                "detail": f"The expression has {len(expression)} characters; the limit is {max_length}.",
            })
        elif "\x00" in expression:
            errors.append({"pointer": f"{at}/expression", "detail": "The expression contains a NUL character."})
        elif not _is_storable(expression):
            errors.append({"pointer": f"{at}/expression", "detail": "The expression is not valid Unicode text."})
    if errors:
        if too_long and all("limit is" in e["detail"] for e in errors):
            raise ProblemError(413, "expression_too_long", errors[0]["detail"], errors=errors)
        raise ProblemError(400, "invalid_task", errors[0]["detail"], errors=errors)
    return [item["expression"] for item in items]


def _is_storable(text: str) -> bool:
    # JSON escapes can carry lone surrogates ("\ud800"), which no UTF-8 database can store.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _idempotency(body, batch: bool) -> store.Idempotency | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _KEY_PATTERN.fullmatch(key):
        raise ProblemError(
            400, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 visible ASCII characters."
        )
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    retained = _runtime().config.idempotency_retention
    return store.Idempotency(key=key, request_hash=digest, batch=batch,
                             remembered_since=utcnow() - retained if retained else None)


def _task_id(raw: str) -> int:
    # ASCII digits only, and nothing around them: int() would accept more (other scripts' digits,
    # underscores, surrounding whitespace of every kind) than an id can look like.
    if re.fullmatch(r"[+-]?[0-9]{1,30}", raw):
        value = int(raw)
        if 1 <= value <= _MAX_ID:
            return value
        raise _not_found(raw)
    raise ProblemError(400, "invalid_task_id", f"{raw!r} is not a task id; ids are positive integers.")


def _not_found(task_id) -> ProblemError:
    return ProblemError(404, "task_not_found", f"There is no task with id {task_id}.")


def _missing(task_id: int) -> ProblemError:
    """Answer a task id without a row: 410 if its task expired, 404 if there never was one.

    A token, though, gets 404 alone: below the purge's frontier live tasks of other tokens have ids too,
    and answering them otherwise than an expired id would tell they exist.
    """
    if auth.caller().scope is None and retention.was_expired(task_id):
        return ProblemError(
            410, "task_expired",
            f"Task {task_id} finished longer ago than the service keeps tasks, and was deleted.",
        )
    return _not_found(task_id)


def _wait_seconds() -> float:
    raw = request.args.get("wait")
    if raw is None or raw == "":
        return 0.0
    high = _runtime().config.max_wait_seconds
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= high:
        raise _bad_query("wait", f"wait must be a number of seconds from 0 to {high:g}.")
    return value


def _int_arg(name: str, *, default, low: int, high: int, name_in_detail: str | None = None):
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"\d{1,19}", raw) or not low <= int(raw) <= high:
        what = name_in_detail or name
        raise _bad_query(name, f"{what} must be a whole number from {low} to {high}.")
    return int(raw)


def _bad_query(name: str, detail: str) -> ProblemError:
    return ProblemError(400, "invalid_query", detail, errors=[{"parameter": name, "detail": detail}])

