"""The only place with SQL for tasks and their result images.

Every status change is a compare-and-set on the expected status (and, for a
worker, on its lease token), so a poll racing a callback, two workers or a
double-tapped button can never move a task twice.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from storage.db import Database
from storage.models import ACTIVE_STATUSES, NewTask, Task, TaskImage, TaskStatus

# Columns a caller may set besides status; names are never taken from input.
_UPDATABLE = frozenset(
    {
        "status_message_id",
        "provider",
        "provider_job_id",
        "progress",
        "queue_position",
        "result_meta",
        "attempts",
        "polls",
        "reruns",
        "error_kind",
        "error_detail",
        "submitted_at",
        "finished_at",
        "delivered_at",
        "deadline_at",
    }
)
_JSON_COLUMNS = frozenset({"result_meta"})


@dataclass(frozen=True)
class NewImage:
    url: str | None = None
    data: bytes | None = None
    mime: str | None = None
    seed: int | None = None


def _statuses(expect: TaskStatus | Iterable[TaskStatus]) -> list[str]:
    if isinstance(expect, TaskStatus):
        return [expect.value]
    return [s.value for s in expect]


def _assignments(fields: dict[str, Any]) -> tuple[str, list[Any]]:
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"not an updatable task column: {sorted(unknown)}")
    sql = "".join(f", {name} = ?" for name in fields)
    values = [json.dumps(v) if k in _JSON_COLUMNS and v is not None else v for k, v in fields.items()]
    return sql, values


def _next_due_statement(statuses: Sequence[TaskStatus]) -> tuple[str, list[str]]:
    """MIN(next_run_at) over these statuses: one index probe per status (a
    MIN over "status IN (...)" would scan), in one statement."""
    probes = " UNION ALL ".join("SELECT MIN(next_run_at) AS due FROM tasks WHERE status = ?" for _ in statuses)
    return f"SELECT MIN(due) FROM ({probes})", [s.value for s in statuses]


class TaskRepository:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def create(self, new: NewTask) -> Task | None:
        """Store a new queued task, due at once. None when the same request
        (chat + message, or parent + action) already made one."""
        now = self.clock()
        row = await self.db.fetchone(
            """INSERT OR IGNORE INTO tasks (
                kind, status, user_id, chat_id, chat_type, thread_id, request_message_id,
                language, params, inputs, source, parent_task_id, action_key, provider,
                business_id, callback_token, next_run_at, deadline_at, created_at, updated_at
            ) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            RETURNING *""",
            (
                new.kind,
                new.user_id,
                new.chat_id,
                new.chat_type,
                new.thread_id,
                new.request_message_id,
                new.language,
                json.dumps(new.params),
                json.dumps(new.inputs),
                json.dumps(new.source) if new.source is not None else None,
                new.parent_task_id,
                new.action_key,
                new.provider,
                "drawbridge" + secrets.token_hex(10),
                secrets.token_urlsafe(24),
                now,
                new.deadline_at,
                now,
                now,
            ),
        )
        return Task.from_row(row) if row else None

    async def get(self, task_id: int) -> Task | None:
        row = await self.db.fetchone("SELECT * FROM tasks WHERE id = ?", (task_id,))
        return Task.from_row(row) if row else None

    async def by_request(self, chat_id: int, message_id: int) -> Task | None:
        row = await self.db.fetchone(
            "SELECT * FROM tasks WHERE chat_id = ? AND request_message_id = ?"
            " AND parent_task_id IS NULL",
            (chat_id, message_id),
        )
        return Task.from_row(row) if row else None

    async def by_action(self, action_key: str) -> Task | None:
        row = await self.db.fetchone("SELECT * FROM tasks WHERE action_key = ?", (action_key,))
        return Task.from_row(row) if row else None

    async def by_callback_token(self, token: str) -> Task | None:
        row = await self.db.fetchone("SELECT * FROM tasks WHERE callback_token = ?", (token,))
        return Task.from_row(row) if row else None

    async def by_job(self, provider: str, job_id: str) -> Task | None:
        row = await self.db.fetchone(
            "SELECT * FROM tasks WHERE provider = ? AND provider_job_id = ?", (provider, job_id)
        )
        return Task.from_row(row) if row else None

    async def make_due(self, providers: Sequence[str], statuses: Sequence[TaskStatus]) -> int:
        """Make these vendors' tasks in these statuses due now (at start-up:
        their jobs lived in the process that stopped)."""
        if not providers:
            return 0
        now = self.clock()
        return await self.db.execute(
            f"UPDATE tasks SET next_run_at = ?, updated_at = ? WHERE lease_token IS NULL"
            f" AND provider IN ({', '.join('?' for _ in providers)})"
            f" AND status IN ({', '.join('?' for _ in statuses)})",
            (now, now, *providers, *_statuses(statuses)),
        )

    async def lease_due(
        self, statuses: Sequence[TaskStatus], limit: int, lease_seconds: float
    ) -> list[Task]:
        """Take up to ``limit`` due rows in these statuses for one worker.
        The lease is next_run_at pushed ``lease_seconds`` ahead."""
        rows = await self.db.fetchall(*self._lease_statement(statuses, limit, lease_seconds))
        return sorted((Task.from_row(r) for r in rows), key=lambda t: t.id)

    async def lease_soon(
        self, statuses: Sequence[TaskStatus], provider: str, within_seconds: float, limit: int,
        lease_seconds: float,
    ) -> list[Task]:
        """Lease up to ``limit`` rows of one vendor that come due within
        ``within_seconds``: a batch query answers them in the same call."""
        if limit <= 0:
            return []
        now = self.clock()
        marks = ",".join("?" for _ in statuses)
        rows = await self.db.fetchall(
            f"""UPDATE tasks SET lease_token = ?, next_run_at = ?, updated_at = ?
                WHERE id IN (
                    SELECT id FROM tasks WHERE status IN ({marks}) AND next_run_at <= ?
                    AND provider = ?
                    ORDER BY next_run_at LIMIT ?)
                RETURNING *""",
            (secrets.token_hex(8), now + lease_seconds, now, *[s.value for s in statuses],
             now + within_seconds, provider, limit),
        )
        return sorted((Task.from_row(r) for r in rows), key=lambda t: t.id)

    async def next_due_at(self, statuses: Sequence[TaskStatus]) -> float | None:
        """When the earliest of these rows comes due."""
        row = await self.db.fetchone(*_next_due_statement(statuses))
        return row[0] if row else None

    async def take_due(
        self, statuses: Sequence[TaskStatus], limit: int, lease_seconds: float
    ) -> tuple[list[Task], float | None]:
        """A scheduler tick in one trip to the database: lease_due, then
        next_due_at of what is left (so the stage knows how long to sleep)."""
        lease_sql, lease_params = self._lease_statement(statuses, limit, lease_seconds)
        due_sql, due_params = _next_due_statement(statuses)

        def tick(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], float | None]:
            rows = conn.execute(lease_sql, lease_params).fetchall()
            return rows, conn.execute(due_sql, due_params).fetchone()[0]

        rows, next_due = await self.db.run(tick)
        return sorted((Task.from_row(r) for r in rows), key=lambda t: t.id), next_due

    def _lease_statement(
        self, statuses: Sequence[TaskStatus], limit: int, lease_seconds: float
    ) -> tuple[str, tuple[Any, ...]]:
        now = self.clock()
        marks = ",".join("?" for _ in statuses)
        sql = f"""UPDATE tasks SET lease_token = ?, next_run_at = ?, updated_at = ?
                WHERE id IN (
                    SELECT id FROM tasks WHERE status IN ({marks}) AND next_run_at <= ?
                    ORDER BY next_run_at LIMIT ?)
                RETURNING *"""
        return sql, (secrets.token_hex(8), now + lease_seconds, now, *[s.value for s in statuses], now, limit)

    async def release_leases(self) -> int:
        """At start-up: leases held by a process that died are void, and the
        rows are due now (only one bot process works on a database; Telegram
        refuses a second long-polling instance anyway)."""
        now = self.clock()
        return await self.db.execute(
            "UPDATE tasks SET lease_token = NULL, next_run_at = ?, updated_at = ? WHERE lease_token IS NOT NULL",
            (now, now),
        )

    async def transition(
        self,
        task_id: int,
        expect: TaskStatus | Iterable[TaskStatus],
        to: TaskStatus,
        *,
        lease_token: str | None = None,
        next_run_at: float | None = None,
        **fields: Any,
    ) -> Task | None:
        """Compare-and-set the status: the task as it is now, or None when
        someone else moved it first."""
        sets, values = _assignments(fields)
        expected = _statuses(expect)
        marks = ",".join("?" for _ in expected)
        now = self.clock()
        sql = (
            f"UPDATE tasks SET status = ?, lease_token = NULL, next_run_at = ?, updated_at = ?{sets}"
            f" WHERE id = ? AND status IN ({marks})"
        )
        params: list[Any] = [to.value, now if next_run_at is None else next_run_at, now]
        params += [*values, task_id, *expected]
        if lease_token is not None:
            sql += " AND lease_token = ?"
            params.append(lease_token)
        row = await self.db.fetchone(sql + " RETURNING *", params)
        return Task.from_row(row) if row else None

    async def reschedule(
        self, task_id: int, lease_token: str, next_run_at: float, **fields: Any
    ) -> Task | None:
        """Keep the status, release the lease, come back at ``next_run_at``:
        the task as it is now, or None when the lease was no longer ours."""
        sets, values = _assignments(fields)
        row = await self.db.fetchone(
            f"UPDATE tasks SET lease_token = NULL, next_run_at = ?, updated_at = ?{sets}"
            " WHERE id = ? AND lease_token = ? RETURNING *",
            (next_run_at, self.clock(), *values, task_id, lease_token),
        )
        return Task.from_row(row) if row else None

    async def update(self, task_id: int, **fields: Any) -> Task | None:
        """Set bookkeeping columns that do not decide who owns the task;
        returns the task as it is now (None when there is no such task)."""
        sets, values = _assignments(fields)
        row = await self.db.fetchone(
            f"UPDATE tasks SET updated_at = ?{sets} WHERE id = ? RETURNING *",
            (self.clock(), *values, task_id),
        )
        return Task.from_row(row) if row else None

    async def postpone(self, task_id: int, not_before: float) -> None:
        """Move an idle task's next run later (never earlier): a vendor that
        just spoke needs no safety poll yet. A leased task is left alone,
        because its next_run_at is the lease and shortening it would let a
        second stage take the task."""
        await self.db.execute(
            "UPDATE tasks SET next_run_at = ?, updated_at = ?"
            " WHERE id = ? AND lease_token IS NULL AND next_run_at < ?",
            (not_before, self.clock(), task_id, not_before),
        )

    async def swap_question(self, task_id: int, expect: int | None, value: int | None) -> bool:
        """Compare-and-set the question a vendor job puts to its user
        (result_meta "question"): absent = none, 0 = being sent, the
        message id once asked, minus it once answered (until the vendor
        moves on). Only while the task is at the vendor. True when it was
        ``expect``."""
        meta = "COALESCE(result_meta, '{}')"
        changed = await self.db.execute(
            f"UPDATE tasks SET updated_at = ?, result_meta = CASE WHEN ? IS NULL"
            f" THEN json_remove({meta}, '$.question') ELSE json_set({meta}, '$.question', ?) END"
            f" WHERE id = ? AND status IN ('submitted', 'running') AND json_extract({meta}, '$.question') IS ?",
            (self.clock(), value, value, task_id, expect),
        )
        return changed > 0

    async def asking(self, chat_id: int, user_id: int, message_id: int) -> Task | None:
        """The user's active task that asked (or was answered) in ``message_id``."""
        row = await self.db.fetchone(
            "SELECT * FROM tasks WHERE user_id = ? AND chat_id = ? AND status IN ('submitted', 'running')"
            " AND json_extract(COALESCE(result_meta, '{}'), '$.question') IN (?, ?)",
            (user_id, chat_id, message_id, -message_id),
        )
        return Task.from_row(row) if row else None

    async def succeed(
        self,
        task_id: int,
        expect: Iterable[TaskStatus],
        images: Sequence[NewImage],
        result_meta: dict[str, Any],
        lease_token: str | None = None,
    ) -> bool:
        """Move to SUCCEEDED and store the result images in one transaction."""
        expected = _statuses(expect)
        marks = ",".join("?" for _ in expected)
        now = self.clock()
        sql = (
            "UPDATE tasks SET status = 'succeeded', lease_token = NULL, next_run_at = ?,"
            " updated_at = ?, finished_at = ?, progress = 1.0, attempts = 0, result_meta = ?"
            f" WHERE id = ? AND status IN ({marks})"
        )
        params: list[Any] = [now, now, now, json.dumps(result_meta), task_id, *expected]
        if lease_token is not None:
            sql += " AND lease_token = ?"
            params.append(lease_token)

        def work(conn: sqlite3.Connection) -> bool:
            if conn.execute(sql, params).rowcount != 1:
                return False
            conn.executemany(
                "INSERT OR REPLACE INTO task_images (task_id, idx, url, data, mime, seed)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(task_id, i, im.url, im.data, im.mime, im.seed) for i, im in enumerate(images)],
            )
            return True

        return await self.db.transaction(work)

    async def images(self, task_id: int) -> list[TaskImage]:
        rows = await self.db.fetchall(
            "SELECT * FROM task_images WHERE task_id = ? ORDER BY idx", (task_id,)
        )
        return [TaskImage.from_row(r) for r in rows]

    async def store_image_data(
        self, task_id: int, idx: int, data: bytes, mime: str, width: int, height: int
    ) -> None:
        await self.db.execute(
            "UPDATE task_images SET data = ?, mime = ?, width = ?, height = ?"
            " WHERE task_id = ? AND idx = ?",
            (data, mime, width, height, task_id, idx),
        )

    async def record_sent(self, task_id: int, sent: Sequence[tuple[int, str, int]]) -> None:
        """Note images Telegram already accepted, before the delivery is complete."""
        rows = [(file_id, message_id, task_id, idx) for idx, file_id, message_id in sent]
        await self.db.transaction(
            lambda conn: conn.executemany(
                "UPDATE task_images SET file_id = ?, message_id = ? WHERE task_id = ? AND idx = ?", rows
            )
        )

    async def mark_delivered(
        self, task_id: int, lease_token: str, sent: Sequence[tuple[int, str, int]]
    ) -> Task | None:
        """SUCCEEDED → DELIVERED with the Telegram file_ids of (idx, file_id,
        message_id); the image bytes are dropped (Telegram keeps the file).
        Returns the delivered task, or None when the lease was no longer ours."""
        now = self.clock()

        def work(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row = conn.execute(
                "UPDATE tasks SET status = 'delivered', lease_token = NULL, updated_at = ?,"
                " delivered_at = ? WHERE id = ? AND status = 'succeeded' AND lease_token = ?"
                " RETURNING *",
                (now, now, task_id, lease_token),
            ).fetchone()
            if row is None:
                return None
            conn.executemany(
                "UPDATE task_images SET file_id = ?, message_id = ?, data = NULL"
                " WHERE task_id = ? AND idx = ?",
                [(file_id, message_id, task_id, idx) for idx, file_id, message_id in sent],
            )
            return row

        row = await self.db.transaction(work)
        return Task.from_row(row) if row else None

    async def drop_kept_originals(self, delivered_before: float) -> int:
        """The bytes a delivered grid keeps of its originals, once old
        enough (Telegram holds the grid; shown originals keep their file_id)."""
        return await self.db.execute(
            "UPDATE task_images SET data = NULL WHERE data IS NOT NULL AND task_id IN"
            " (SELECT id FROM tasks WHERE status = 'delivered' AND delivered_at < ?)",
            (delivered_before,),
        )

    async def queue_position(self, task: Task) -> int:
        """1-based place among queued tasks that go before this one: older
        ones being handed to a vendor or due now, not those sleeping until
        a retry (they do not hold this one up)."""
        row = await self.db.fetchone(
            "SELECT COUNT(*) FROM tasks WHERE status = 'queued' AND id < ?"
            " AND (lease_token IS NOT NULL OR next_run_at <= ?)",
            (task.id, self.clock()),
        )
        return (row[0] if row else 0) + 1

    async def count_active(self, user_id: int) -> int:
        marks = ",".join("?" for _ in ACTIVE_STATUSES)
        row = await self.db.fetchone(
            f"SELECT COUNT(*) FROM tasks WHERE user_id = ? AND status IN ({marks})",
            (user_id, *[s.value for s in ACTIVE_STATUSES]),
        )
        return row[0] if row else 0

    async def count_since(self, user_id: int, since: float) -> int:
        """Tasks a user started since ``since``; failed ones do not count."""
        row = await self.db.fetchone(
            "SELECT COUNT(*) FROM tasks WHERE user_id = ? AND created_at >= ?"
            " AND status NOT IN ('failed', 'cancelled')",
            (user_id, since),
        )
        return row[0] if row else 0

    async def recent(self, user_id: int, limit: int = 10) -> list[Task]:
        rows = await self.db.fetchall(
            "SELECT * FROM tasks WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
            (user_id, limit),
        )
        return [Task.from_row(r) for r in rows]

    async def stats_since(self, since: float) -> list[tuple[str, str, int]]:
        """(vendor, status, count) for tasks created since ``since``."""
        rows = await self.db.fetchall(
            "SELECT COALESCE(provider, '-'), status, COUNT(*) FROM tasks WHERE created_at >= ?"
            " GROUP BY provider, status ORDER BY provider, status",
            (since,),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def durations_since(self, since: float, limit: int = 5000) -> list[float]:
        """Seconds from request to delivery, most recent first."""
        rows = await self.db.fetchall(
            "SELECT delivered_at - created_at FROM tasks WHERE created_at >= ? AND status = 'delivered'"
            " ORDER BY created_at DESC LIMIT ?",
            (since, limit),
        )
        return [r[0] for r in rows]
