"""storage/: migrations, the task state machine with leases, users/chats, media tokens."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest

from storage import Store
from storage.db import Database, Migration, bundled_migrations, split_statements
from storage.models import ACTIVE_STATUSES, NewTask, TaskStatus
from storage.tasks import NewImage

S = TaskStatus
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[Store]:
    store = await Store.open(tmp_path / "data" / "test.db", clock=clock)
    try:
        yield store
    finally:
        await store.close()


_message_ids = iter(range(1000, 10**9))


def new_task(**overrides: object) -> NewTask:
    values: dict = {
        "kind": "txt2img",
        "user_id": 11,
        "chat_id": 22,
        "chat_type": "private",
        "language": "en",
        "params": {"prompt": "a fox", "n": 1},
        "deadline_at": T0 + 600,
        "request_message_id": next(_message_ids),
    }
    values.update(overrides)
    return NewTask(**values)


def table_names(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def recorded_versions(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        return list(conn.execute("SELECT version, name FROM schema_migrations ORDER BY version"))


# --------------------------------------------------------------------------- #
# Migrations and the connection
# --------------------------------------------------------------------------- #


async def test_open_creates_parent_dir_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "x.db"
    store = await Store.open(path)
    await store.close()
    assert path.exists()
    assert {"users", "chats", "tasks", "task_images", "media", "schema_migrations"} <= table_names(path)


async def test_migrations_recorded(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = await Store.open(path)
    await store.close()
    bundled = bundled_migrations()
    assert [m.version for m in bundled] == list(range(1, len(bundled) + 1))
    assert recorded_versions(path) == [(m.version, m.name) for m in bundled]
    assert recorded_versions(path)[0] == (1, "initial")


async def test_migrations_idempotent_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = await Store.open(path)
    await store.tasks.create(new_task())
    await store.close()
    with sqlite3.connect(path) as conn:
        before = list(conn.execute("SELECT version, name, applied_at FROM schema_migrations"))
    store = await Store.open(path)
    try:
        assert await store.db.migrate(bundled_migrations()) == []
        assert len(await store.tasks.recent(11)) == 1  # data survives reopening
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        after = list(conn.execute("SELECT version, name, applied_at FROM schema_migrations"))
    assert before == after


async def test_custom_migrations_applied_in_order(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    migrations = [
        Migration(1, "one", "CREATE TABLE a (x INTEGER);"),
        Migration(2, "two", "-- comment\nCREATE TABLE b (y INTEGER);\nINSERT INTO b VALUES (5);\n"),
    ]
    db = await Database.open(path, migrations)
    try:
        row = await db.fetchone("SELECT y FROM b")
        assert row[0] == 5
        assert await db.migrate(migrations) == []
        assert await db.migrate([*migrations, Migration(3, "three", "CREATE TABLE c (z);")]) == [3]
    finally:
        await db.close()
    assert recorded_versions(path) == [(1, "one"), (2, "two"), (3, "three")]


async def test_failing_migration_rolls_back_completely(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    good = Migration(1, "good", "CREATE TABLE a (x INTEGER);")
    bad = Migration(
        2,
        "bad",
        "CREATE TABLE partial (x INTEGER);\n"
        "INSERT INTO partial VALUES (1);\n"
        "CREATE INDEX partial_x ON partial (x);\n"
        "INSERT INTO no_such_table VALUES (1);\n",
    )
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        await Database.open(path, [good, bad])
    tables = table_names(path)
    assert "a" in tables
    assert "partial" not in tables
    with sqlite3.connect(path) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "partial_x" not in indexes
    assert recorded_versions(path) == [(1, "good")]

    # Fixed, it applies on the next start, once.
    fixed = Migration(2, "bad", "CREATE TABLE partial (x INTEGER);")
    db = await Database.open(path, [good, fixed])
    try:
        assert await db.migrate([good, fixed]) == []
    finally:
        await db.close()
    assert "partial" in table_names(path)
    assert recorded_versions(path) == [(1, "good"), (2, "bad")]


async def test_failing_later_migration_keeps_earlier_ones(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    migrations = [
        Migration(1, "one", "CREATE TABLE a (x);"),
        Migration(2, "two", "CREATE TABLE b (x);"),
        Migration(3, "three", "CREATE TABLE c (x);\nCREATE TABLE a (x);"),  # a exists: fails
    ]
    with pytest.raises(sqlite3.OperationalError):
        await Database.open(path, migrations)
    assert {"a", "b"} <= table_names(path)
    assert "c" not in table_names(path)
    assert [v for v, _ in recorded_versions(path)] == [1, 2]


def test_split_statements() -> None:
    sql = "-- header\nCREATE TABLE a (x);\n\nCREATE TABLE b (y); -- trailing\n-- end\n"
    assert split_statements(sql) == ["-- header\nCREATE TABLE a (x);", "CREATE TABLE b (y);"]
    with pytest.raises(ValueError):
        split_statements("CREATE TABLE a (x);\nCREATE TABLE b (y)")


def test_split_statements_on_one_line() -> None:
    """Two complete statements on one line are two statements: sqlite3's
    execute() refuses more than one at a time."""
    assert split_statements("CREATE TABLE a (x); CREATE TABLE b (y);\n") == [
        "CREATE TABLE a (x);",
        "CREATE TABLE b (y);",
    ]


async def test_journal_mode_is_wal_and_foreign_keys_on(store: Store) -> None:
    row = await store.db.fetchone("PRAGMA journal_mode")
    assert row[0] == "wal"
    row = await store.db.fetchone("PRAGMA foreign_keys")
    assert row[0] == 1


# --------------------------------------------------------------------------- #
# Tasks: create and duplicates
# --------------------------------------------------------------------------- #


async def test_create_is_queued_and_due_now(store: Store, clock: Clock) -> None:
    task = await store.tasks.create(new_task(params={"prompt": "a fox", "n": 2}, inputs=[{"file_id": "F"}]))
    assert task is not None
    assert task.status is S.QUEUED
    assert task.next_run_at == T0
    assert task.created_at == task.updated_at == T0
    assert task.params == {"prompt": "a fox", "n": 2}
    assert task.inputs == [{"file_id": "F"}]
    assert task.lease_token is None
    assert task.attempts == task.polls == 0
    assert task.business_id.startswith("drawbridge")
    assert task.callback_token and len(task.callback_token) >= 24
    assert await store.tasks.get(task.id) == task
    assert await store.tasks.by_callback_token(task.callback_token) == task


async def test_tasks_get_distinct_ids_and_tokens(store: Store) -> None:
    tasks = [await store.tasks.create(new_task()) for _ in range(5)]
    assert len({t.id for t in tasks}) == 5
    assert len({t.business_id for t in tasks}) == 5
    assert len({t.callback_token for t in tasks}) == 5


async def test_duplicate_request_returns_none(store: Store) -> None:
    first = await store.tasks.create(new_task(chat_id=5, request_message_id=77))
    assert first is not None
    assert await store.tasks.create(new_task(chat_id=5, request_message_id=77, params={"prompt": "x"})) is None
    # same message id in another chat is another request
    assert await store.tasks.create(new_task(chat_id=6, request_message_id=77)) is not None
    assert await store.tasks.by_request(5, 77) == first
    assert len(await store.tasks.recent(11)) == 2


async def test_duplicate_action_key_returns_none(store: Store) -> None:
    parent = await store.tasks.create(new_task(chat_id=5, request_message_id=1))
    assert parent is not None
    key = f"{parent.id}:u0"
    # actions answer the same request message as the parent, with a parent id
    child = await store.tasks.create(
        new_task(kind="upscale", chat_id=5, request_message_id=1, parent_task_id=parent.id, action_key=key)
    )
    assert child is not None
    again = await store.tasks.create(
        new_task(kind="upscale", chat_id=5, request_message_id=2, parent_task_id=parent.id, action_key=key)
    )
    assert again is None
    assert await store.tasks.by_action(key) == child
    other = await store.tasks.create(
        new_task(kind="upscale", chat_id=5, request_message_id=1, parent_task_id=parent.id, action_key=f"{parent.id}:u1")
    )
    assert other is not None


# --------------------------------------------------------------------------- #
# Leases
# --------------------------------------------------------------------------- #


async def test_lease_due_only_due_rows_in_given_statuses(store: Store, clock: Clock) -> None:
    queued = await store.tasks.create(new_task())
    at_vendor = await store.tasks.create(new_task())
    assert queued and at_vendor
    assert await store.tasks.transition(at_vendor.id, S.QUEUED, S.SUBMITTED, next_run_at=T0 + 100)

    leased = await store.tasks.lease_due([S.QUEUED], limit=10, lease_seconds=30)
    assert [t.id for t in leased] == [queued.id]
    assert await store.tasks.lease_due([S.SUBMITTED, S.RUNNING], limit=10, lease_seconds=30) == []

    clock.advance(100)
    leased = await store.tasks.lease_due([S.SUBMITTED, S.RUNNING], limit=10, lease_seconds=30)
    assert [t.id for t in leased] == [at_vendor.id]
    assert leased[0].status is S.SUBMITTED


async def test_lease_due_sets_token_and_pushes_next_run(store: Store, clock: Clock) -> None:
    task = await store.tasks.create(new_task())
    clock.advance(5)
    [leased] = await store.tasks.lease_due([S.QUEUED], limit=1, lease_seconds=30)
    assert leased.id == task.id
    assert leased.lease_token
    assert leased.next_run_at == T0 + 5 + 30
    assert leased.updated_at == T0 + 5
    assert (await store.tasks.get(task.id)).lease_token == leased.lease_token


async def test_lease_due_respects_limit_and_order(store: Store, clock: Clock) -> None:
    ids = []
    for _ in range(5):
        ids.append((await store.tasks.create(new_task())).id)
        clock.advance(1)  # older tasks are due earlier
    first = await store.tasks.lease_due([S.QUEUED], limit=2, lease_seconds=60)
    second = await store.tasks.lease_due([S.QUEUED], limit=2, lease_seconds=60)
    third = await store.tasks.lease_due([S.QUEUED], limit=2, lease_seconds=60)
    assert [t.id for t in first] == ids[:2]
    assert [t.id for t in second] == ids[2:4]
    assert [t.id for t in third] == ids[4:]
    assert await store.tasks.lease_due([S.QUEUED], limit=2, lease_seconds=60) == []
    tokens = {t.lease_token for t in first + second + third}
    assert len(tokens) == 3  # one token per lease call


async def test_second_lease_gets_nothing_until_expiry(store: Store, clock: Clock) -> None:
    task = await store.tasks.create(new_task())
    [first] = await store.tasks.lease_due([S.QUEUED], limit=5, lease_seconds=30)
    clock.advance(29.9)
    assert await store.tasks.lease_due([S.QUEUED], limit=5, lease_seconds=30) == []
    clock.advance(0.1)
    [again] = await store.tasks.lease_due([S.QUEUED], limit=5, lease_seconds=30)
    assert again.id == task.id
    assert again.lease_token != first.lease_token
    # the dead worker's token no longer owns the row
    assert not await store.tasks.reschedule(task.id, first.lease_token, T0 + 1000)
    assert await store.tasks.reschedule(task.id, again.lease_token, T0 + 1000)


async def test_next_due_at(store: Store, clock: Clock) -> None:
    assert await store.tasks.next_due_at([S.QUEUED]) is None
    a = await store.tasks.create(new_task())
    clock.advance(3)
    await store.tasks.create(new_task())
    assert await store.tasks.next_due_at([S.QUEUED]) == T0
    await store.tasks.transition(a.id, S.QUEUED, S.SUBMITTED, next_run_at=T0 + 50)
    assert await store.tasks.next_due_at([S.QUEUED]) == T0 + 3
    assert await store.tasks.next_due_at([S.SUBMITTED, S.RUNNING]) == T0 + 50


async def test_take_due_leases_and_says_when_the_rest_is_due(store: Store, clock: Clock) -> None:
    first = await store.tasks.create(new_task())
    clock.advance(1)
    second = await store.tasks.create(new_task())
    later = await store.tasks.create(new_task())
    await store.tasks.transition(later.id, S.QUEUED, S.QUEUED, next_run_at=T0 + 40)
    clock.advance(1)
    leased, next_due = await store.tasks.take_due([S.QUEUED], limit=1, lease_seconds=30)
    assert [t.id for t in leased] == [first.id] and leased[0].lease_token
    assert next_due == T0 + 1  # the second is due already: the stage must look again at once
    leased, next_due = await store.tasks.take_due([S.QUEUED], limit=5, lease_seconds=30)
    assert [t.id for t in leased] == [second.id]
    assert next_due == T0 + 32  # leased at T0 + 2 for 30 s: before the later task (T0 + 40)
    assert await store.tasks.take_due([S.SUBMITTED], limit=5, lease_seconds=30) == ([], None)


async def statements_of(
    store: Store, monkeypatch: pytest.MonkeyPatch, method: str, call: Coroutine[Any, Any, Any]
) -> list[tuple[str, tuple]]:
    """The (sql, params) that ``call`` runs through ``store.db.<method>``."""
    captured: list[tuple[str, tuple]] = []
    real = getattr(store.db, method)

    async def spy(sql: str, params=()):  # type: ignore[no-untyped-def]
        captured.append((sql, tuple(params)))
        return await real(sql, params)

    monkeypatch.setattr(store.db, method, spy)
    await call
    monkeypatch.undo()
    return captured


async def test_due_query_uses_index(store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(3):
        await store.tasks.create(new_task())
    [(sql, params)] = await statements_of(
        store, monkeypatch, "fetchall", store.tasks.lease_due([S.SUBMITTED, S.RUNNING], limit=5, lease_seconds=30)
    )
    inner = re.search(r"\(\s*(SELECT\b.*?)\)\s*RETURNING", sql, re.S | re.I)
    assert inner, f"no inner SELECT in lease_due's SQL: {sql}"
    select = inner.group(1)
    inner_params = params[len(params) - select.count("?") :]
    plan = await store.db.fetchall(f"EXPLAIN QUERY PLAN {select}", inner_params)
    details = [row[3] for row in plan]
    assert any(re.search(r"USING (COVERING )?INDEX tasks_due\b", d) for d in details), details
    assert not any(re.match(r"SCAN tasks\b", d) for d in details), details


async def test_next_due_probes_the_index_once_per_status(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.tasks.create(new_task())
    # One statement, whatever the number of statuses.
    [(sql, params)] = await statements_of(store, monkeypatch, "fetchone", store.tasks.next_due_at([S.SUBMITTED, S.RUNNING]))
    plan = await store.db.fetchall(f"EXPLAIN QUERY PLAN {sql}", params)
    details = [row[3] for row in plan]
    assert sum(bool(re.search(r"INDEX tasks_due\b", d)) for d in details) == 2, details
    assert not any(re.match(r"SCAN tasks\b", d) for d in details), details


async def test_transaction_commits_all_or_nothing(store: Store) -> None:
    task = await store.tasks.create(new_task())
    assert task is not None

    def half_done(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE tasks SET polls = 7 WHERE id = ?", (task.id,))
        raise RuntimeError("crash between two statements")

    with pytest.raises(RuntimeError):
        await store.db.transaction(half_done)
    assert (await store.tasks.get(task.id)).polls == 0  # type: ignore[union-attr]
    assert await store.db.transaction(
        lambda conn: conn.execute("UPDATE tasks SET polls = 8 WHERE id = ?", (task.id,)).rowcount
    ) == 1
    assert (await store.tasks.get(task.id)).polls == 8  # type: ignore[union-attr]


# --------------------------------------------------------------------------- #
# Transitions
# --------------------------------------------------------------------------- #


async def test_transition_wrong_expected_status(store: Store) -> None:
    task = await store.tasks.create(new_task())
    assert not await store.tasks.transition(task.id, S.RUNNING, S.SUCCEEDED)
    assert not await store.tasks.transition(task.id, [S.SUBMITTED, S.RUNNING], S.FAILED)
    assert (await store.tasks.get(task.id)).status is S.QUEUED


async def test_transition_wrong_lease_token(store: Store) -> None:
    task = await store.tasks.create(new_task())
    [leased] = await store.tasks.lease_due([S.QUEUED], 1, 30)
    assert not await store.tasks.transition(task.id, S.QUEUED, S.SUBMITTED, lease_token="not-the-token")
    fresh = await store.tasks.get(task.id)
    assert fresh.status is S.QUEUED
    assert fresh.lease_token == leased.lease_token


async def test_transition_right_moves_and_clears_lease(store: Store, clock: Clock) -> None:
    task = await store.tasks.create(new_task())
    [leased] = await store.tasks.lease_due([S.QUEUED], 1, 30)
    clock.advance(2)
    moved = await store.tasks.transition(
        task.id, S.QUEUED, S.SUBMITTED, lease_token=leased.lease_token, next_run_at=T0 + 20,
        provider="sandbox", provider_job_id="job-1", submitted_at=T0 + 2,
    )
    assert moved == await store.tasks.get(task.id)  # the row as it is now, without a re-read
    fresh = moved
    assert fresh.status is S.SUBMITTED
    assert fresh.lease_token is None
    assert fresh.next_run_at == T0 + 20
    assert (fresh.provider, fresh.provider_job_id, fresh.submitted_at) == ("sandbox", "job-1", T0 + 2)
    assert fresh.updated_at == T0 + 2
    # the same CAS a second time fails: someone moved it first
    assert not await store.tasks.transition(task.id, S.QUEUED, S.SUBMITTED, lease_token=leased.lease_token)


async def test_transition_without_next_run_is_due_now(store: Store, clock: Clock) -> None:
    task = await store.tasks.create(new_task())
    clock.advance(7)
    assert await store.tasks.transition(task.id, S.QUEUED, S.FAILED, error_kind="deadline", finished_at=clock())
    fresh = await store.tasks.get(task.id)
    assert (fresh.status, fresh.next_run_at, fresh.error_kind, fresh.finished_at) == (S.FAILED, T0 + 7, "deadline", T0 + 7)


async def test_transition_any_of_several_expected(store: Store) -> None:
    task = await store.tasks.create(new_task())
    assert await store.tasks.transition(task.id, ACTIVE_STATUSES, S.CANCELLED)
    assert (await store.tasks.get(task.id)).status is S.CANCELLED


async def test_transition_json_column_and_unknown_column(store: Store) -> None:
    task = await store.tasks.create(new_task())
    assert await store.tasks.transition(task.id, S.QUEUED, S.SUBMITTED, result_meta={"is_grid": True})
    assert (await store.tasks.get(task.id)).result_meta == {"is_grid": True}
    with pytest.raises(ValueError):
        await store.tasks.transition(task.id, S.SUBMITTED, S.RUNNING, status="delivered")
    with pytest.raises(ValueError):
        await store.tasks.transition(task.id, S.SUBMITTED, S.RUNNING, **{"user_id = 1, kind": "x"})
    with pytest.raises(ValueError):
        await store.tasks.update(task.id, lease_token="mine")
    assert (await store.tasks.get(task.id)).status is S.SUBMITTED


async def test_reschedule_only_with_right_lease(store: Store, clock: Clock) -> None:
    task = await store.tasks.create(new_task())
    assert not await store.tasks.reschedule(task.id, "nobody", T0 + 99)  # not leased at all
    [leased] = await store.tasks.lease_due([S.QUEUED], 1, 30)
    assert not await store.tasks.reschedule(task.id, "wrong", T0 + 99, attempts=1)
    fresh = await store.tasks.get(task.id)
    assert (fresh.attempts, fresh.next_run_at) == (0, T0 + 30)
    assert await store.tasks.reschedule(task.id, leased.lease_token, T0 + 99, attempts=1, polls=4)
    fresh = await store.tasks.get(task.id)
    assert fresh.status is S.QUEUED
    assert (fresh.attempts, fresh.polls, fresh.next_run_at, fresh.lease_token) == (1, 4, T0 + 99, None)
    # the lease is released: the same token cannot reschedule twice
    assert not await store.tasks.reschedule(task.id, leased.lease_token, T0 + 5)


async def test_postpone_moves_an_idle_task_later_only(store: Store, clock: Clock) -> None:
    task = await store.tasks.create(new_task())
    await store.tasks.postpone(task.id, T0 + 90)
    assert (await store.tasks.get(task.id)).next_run_at == T0 + 90
    await store.tasks.postpone(task.id, T0 + 10)  # never earlier
    assert (await store.tasks.get(task.id)).next_run_at == T0 + 90


async def test_postpone_leaves_a_leased_task_alone(store: Store, clock: Clock) -> None:
    task = await store.tasks.create(new_task())
    clock.now = T0 + 90
    [leased] = await store.tasks.lease_due([S.QUEUED], 1, 30)
    await store.tasks.postpone(task.id, T0 + 500)
    fresh = await store.tasks.get(task.id)
    # The lease (next_run_at) is the stage's: neither shortened nor moved.
    assert (fresh.lease_token, fresh.next_run_at) == (leased.lease_token, T0 + 120)


async def test_a_question_is_claimed_once_and_found_by_its_message(store: Store) -> None:
    task = await running_task(store)
    assert await store.tasks.swap_question(task.id, None, 0)  # being asked
    assert not await store.tasks.swap_question(task.id, None, 0)  # a second report asks nothing
    assert await store.tasks.swap_question(task.id, 0, 777)
    found = await store.tasks.asking(task.chat_id, task.user_id, 777)
    assert found is not None and found.id == task.id and found.result_meta == {"question": 777}
    assert await store.tasks.asking(task.chat_id, task.user_id + 1, 777) is None  # someone else's reply
    assert await store.tasks.swap_question(task.id, 777, -777)  # answered
    assert not await store.tasks.swap_question(task.id, 777, -777)  # answered twice: once only
    assert (await store.tasks.asking(task.chat_id, task.user_id, 777)).id == task.id  # still its question
    assert await store.tasks.swap_question(task.id, -777, None)  # the vendor moved on
    assert (await store.tasks.get(task.id)).result_meta == {}
    await store.tasks.transition(task.id, S.RUNNING, S.CANCELLED)
    assert not await store.tasks.swap_question(task.id, None, 0)  # a finished task asks nothing


async def test_update_sets_bookkeeping(store: Store) -> None:
    task = await store.tasks.create(new_task())
    await store.tasks.update(task.id, status_message_id=555, progress=0.5)
    fresh = await store.tasks.get(task.id)
    assert (fresh.status_message_id, fresh.progress, fresh.status) == (555, 0.5, S.QUEUED)


# --------------------------------------------------------------------------- #
# Results and delivery
# --------------------------------------------------------------------------- #

IMAGES = [NewImage(url="https://vendor/1.png", seed=1), NewImage(data=b"\x89PNG-2", mime="image/png", seed=2)]


async def running_task(store: Store):  # type: ignore[no-untyped-def]
    task = await store.tasks.create(new_task())
    assert await store.tasks.transition(task.id, S.QUEUED, S.SUBMITTED)
    assert await store.tasks.transition(task.id, S.SUBMITTED, S.RUNNING)
    return task


async def test_succeed_stores_images(store: Store, clock: Clock) -> None:
    task = await running_task(store)
    clock.advance(10)
    assert await store.tasks.succeed(task.id, [S.SUBMITTED, S.RUNNING], IMAGES, {"is_grid": False, "x": 1})
    fresh = await store.tasks.get(task.id)
    assert fresh.status is S.SUCCEEDED
    assert fresh.progress == 1.0
    assert fresh.finished_at == T0 + 10
    assert fresh.result_meta == {"is_grid": False, "x": 1}
    images = await store.tasks.images(task.id)
    assert [(i.idx, i.url, i.data, i.mime, i.seed) for i in images] == [
        (0, "https://vendor/1.png", None, None, 1),
        (1, None, b"\x89PNG-2", "image/png", 2),
    ]


async def test_second_succeed_is_rejected_and_images_unchanged(store: Store) -> None:
    task = await running_task(store)
    assert await store.tasks.succeed(task.id, [S.RUNNING], IMAGES, {})
    other = [NewImage(url="https://vendor/other.png")]
    assert not await store.tasks.succeed(task.id, [S.RUNNING], other, {"late": True})
    assert [i.url for i in await store.tasks.images(task.id)] == ["https://vendor/1.png", None]
    assert (await store.tasks.get(task.id)).result_meta == {}


async def test_succeed_with_wrong_lease_is_rejected(store: Store, clock: Clock) -> None:
    task = await running_task(store)
    [leased] = await store.tasks.lease_due([S.RUNNING], 1, 30)
    assert not await store.tasks.succeed(task.id, [S.RUNNING], IMAGES, {}, lease_token="wrong")
    assert await store.tasks.images(task.id) == []
    assert await store.tasks.succeed(task.id, [S.RUNNING], IMAGES, {}, lease_token=leased.lease_token)
    assert (await store.tasks.get(task.id)).lease_token is None


async def test_succeed_is_atomic(store: Store) -> None:
    task = await running_task(store)
    broken = [NewImage(url="ok"), NewImage(data=object())]  # type: ignore[arg-type]  # cannot be bound
    with pytest.raises(Exception):
        await store.tasks.succeed(task.id, [S.RUNNING], broken, {"a": 1})
    fresh = await store.tasks.get(task.id)
    assert fresh.status is S.RUNNING
    assert fresh.result_meta == {}
    assert await store.tasks.images(task.id) == []
    # and the store still works afterwards
    assert await store.tasks.succeed(task.id, [S.RUNNING], IMAGES, {})


async def test_record_sent_and_mark_delivered(store: Store, clock: Clock) -> None:
    task = await running_task(store)
    await store.tasks.succeed(task.id, [S.RUNNING], IMAGES, {})
    await store.tasks.store_image_data(task.id, 0, b"png-0", "image/png", 64, 32)
    await store.tasks.record_sent(task.id, [(0, "file-0", 900)])
    images = await store.tasks.images(task.id)
    assert (images[0].file_id, images[0].message_id, images[0].data) == ("file-0", 900, b"png-0")
    assert (images[0].width, images[0].height) == (64, 32)
    assert images[1].file_id is None

    [leased] = await store.tasks.lease_due([S.SUCCEEDED], 1, 30)
    assert not await store.tasks.mark_delivered(task.id, "wrong", [(1, "file-1", 901)])
    assert (await store.tasks.images(task.id))[1].file_id is None
    clock.advance(3)
    assert await store.tasks.mark_delivered(task.id, leased.lease_token, [(0, "file-0", 900), (1, "file-1", 901)])
    fresh = await store.tasks.get(task.id)
    assert fresh.status is S.DELIVERED
    assert fresh.delivered_at == T0 + 3
    assert fresh.lease_token is None
    images = await store.tasks.images(task.id)
    assert [(i.file_id, i.message_id, i.data) for i in images] == [("file-0", 900, None), ("file-1", 901, None)]
    assert not await store.tasks.mark_delivered(task.id, leased.lease_token, [])


# --------------------------------------------------------------------------- #
# Counting and listing
# --------------------------------------------------------------------------- #


async def test_queue_position(store: Store) -> None:
    a, b, c = [await store.tasks.create(new_task()) for _ in range(3)]
    assert [await store.tasks.queue_position(t) for t in (a, b, c)] == [1, 2, 3]
    await store.tasks.transition(a.id, S.QUEUED, S.SUBMITTED)
    assert await store.tasks.queue_position(b) == 1
    assert await store.tasks.queue_position(c) == 2


async def test_queue_position_skips_tasks_waiting_for_a_retry(store: Store, clock: Clock) -> None:
    a, b, c = [await store.tasks.create(new_task()) for _ in range(3)]
    [leased] = await store.tasks.lease_due([S.QUEUED], limit=1, lease_seconds=30)
    assert leased.id == a.id
    assert await store.tasks.queue_position(c) == 3  # a is being handed to a vendor: still ahead
    await store.tasks.reschedule(a.id, leased.lease_token, T0 + 3600)  # the vendor is busy: an hour
    assert await store.tasks.queue_position(c) == 2  # only b holds c up now
    clock.advance(3600)
    assert await store.tasks.queue_position(c) == 3  # a is due again


async def test_count_active(store: Store) -> None:
    tasks = [await store.tasks.create(new_task(user_id=1)) for _ in range(6)]
    await store.tasks.create(new_task(user_id=2))
    await store.tasks.transition(tasks[1].id, S.QUEUED, S.SUBMITTED)
    await store.tasks.transition(tasks[2].id, S.QUEUED, S.RUNNING)
    await store.tasks.transition(tasks[3].id, S.QUEUED, S.FAILED)
    await store.tasks.transition(tasks[4].id, S.QUEUED, S.CANCELLED)
    await store.tasks.transition(tasks[5].id, S.QUEUED, S.SUCCEEDED)
    assert await store.tasks.count_active(1) == 3
    assert await store.tasks.count_active(2) == 1
    assert await store.tasks.count_active(3) == 0


async def test_count_since_excludes_failed_and_old(store: Store, clock: Clock) -> None:
    await store.tasks.create(new_task(user_id=1))  # at T0: before the window
    clock.advance(100)
    ok = await store.tasks.create(new_task(user_id=1))
    failed = await store.tasks.create(new_task(user_id=1))
    cancelled = await store.tasks.create(new_task(user_id=1))
    delivered = await store.tasks.create(new_task(user_id=1))
    await store.tasks.create(new_task(user_id=2))
    await store.tasks.transition(failed.id, S.QUEUED, S.FAILED)
    await store.tasks.transition(cancelled.id, S.QUEUED, S.CANCELLED)
    await store.tasks.transition(delivered.id, S.QUEUED, S.DELIVERED)
    assert ok is not None
    assert await store.tasks.count_since(1, T0 + 100) == 2
    assert await store.tasks.count_since(1, T0) == 3
    assert await store.tasks.count_since(1, T0 + 101) == 0


async def test_recent_newest_first(store: Store, clock: Clock) -> None:
    ids = []
    for _ in range(4):
        ids.append((await store.tasks.create(new_task(user_id=1))).id)
        clock.advance(1)
    same_time = [(await store.tasks.create(new_task(user_id=1))).id for _ in range(2)]
    await store.tasks.create(new_task(user_id=2))
    recent = await store.tasks.recent(1, limit=10)
    assert [t.id for t in recent] == [same_time[1], same_time[0], *reversed(ids)]
    assert [t.id for t in await store.tasks.recent(1, limit=2)] == [same_time[1], same_time[0]]
    assert await store.tasks.recent(3) == []


async def test_stats_since_groups_by_vendor_and_status(store: Store, clock: Clock) -> None:
    old = await store.tasks.create(new_task())
    clock.advance(100)
    first = await store.tasks.create(new_task())
    second = await store.tasks.create(new_task())
    await store.tasks.transition(first.id, S.QUEUED, S.FAILED, provider="zhiqite")
    await store.tasks.transition(second.id, S.QUEUED, S.SUBMITTED, provider="zhiqite")
    since = clock() - 50
    assert await store.tasks.stats_since(since) == [("zhiqite", "failed", 1), ("zhiqite", "submitted", 1)]
    assert old.id not in (first.id, second.id)


async def test_durations_since_counts_delivered_tasks_only(store: Store, clock: Clock) -> None:
    task = await store.tasks.create(new_task())
    await store.tasks.transition(task.id, S.QUEUED, S.SUBMITTED)
    await store.tasks.succeed(task.id, [S.SUBMITTED], [NewImage(url="http://x/1.png")], {})
    leased = (await store.tasks.lease_due([S.SUCCEEDED], 1, 30))[0]
    clock.advance(12.5)
    assert await store.tasks.mark_delivered(task.id, leased.lease_token, [(0, "file", 9)])
    await store.tasks.create(new_task())  # queued: no duration yet
    assert await store.tasks.durations_since(0) == [12.5]


# --------------------------------------------------------------------------- #
# Accounts
# --------------------------------------------------------------------------- #


async def test_seen_user_and_update_user(store: Store, clock: Clock) -> None:
    user = await store.accounts.seen_user(42, "zh-hans")
    assert (user.id, user.language_code, user.language, user.default_provider) == (42, "zh-hans", None, None)
    assert (user.aspect_ratio, user.image_count) == (None, None)
    # a later update without a language keeps the last known one
    assert (await store.accounts.seen_user(42, None)).language_code == "zh-hans"
    assert (await store.accounts.seen_user(42, "en")).language_code == "en"

    await store.accounts.update_user(42, language="zh", default_provider="sandbox", aspect_ratio="16:9", image_count=4)
    user = await store.accounts.user(42)
    assert (user.language, user.default_provider, user.aspect_ratio, user.image_count) == ("zh", "sandbox", "16:9", 4)
    # seeing the user again does not wipe their settings
    assert (await store.accounts.seen_user(42, "en")).aspect_ratio == "16:9"
    assert await store.accounts.user(43) is None


@pytest.mark.parametrize("name", ["language_code", "id", "created_at", "bogus", "language = 'x', id"])
async def test_update_user_rejects_unknown_setting(store: Store, name: str) -> None:
    await store.accounts.seen_user(42, "en")
    with pytest.raises(ValueError):
        await store.accounts.update_user(42, **{name: "x"})
    user = await store.accounts.user(42)
    assert (user.id, user.language_code, user.language) == (42, "en", None)


async def test_seen_chat_and_update_chat(store: Store) -> None:
    chat = await store.accounts.seen_chat(-100123, "supergroup", "Artists")
    assert (chat.id, chat.type, chat.title, chat.buttons_policy) == (-100123, "supergroup", "Artists", "anyone")
    chat = await store.accounts.seen_chat(-100123, "supergroup", "Artists 2")
    assert chat.title == "Artists 2"
    await store.accounts.update_chat(-100123, buttons_policy="admins")
    assert (await store.accounts.chat(-100123)).buttons_policy == "admins"
    assert (await store.accounts.seen_chat(-100123, "supergroup", "Artists 3")).buttons_policy == "admins"
    assert await store.accounts.chat(1) is None


@pytest.mark.parametrize("name", ["title", "type", "language", "bogus"])
async def test_update_chat_rejects_unknown_setting(store: Store, name: str) -> None:
    await store.accounts.seen_chat(-1, "group", "G")
    with pytest.raises(ValueError):
        await store.accounts.update_chat(-1, **{name: "x"})
    chat = await store.accounts.chat(-1)
    assert (chat.title, chat.type) == ("G", "group")


# --------------------------------------------------------------------------- #
# Media tokens
# --------------------------------------------------------------------------- #


async def test_media_create_valid_and_expiry(store: Store, clock: Clock) -> None:
    item = await store.media.create("file-id-1", "image/jpeg", ttl_seconds=60)
    assert (item.file_id, item.mime, item.task_id, item.expires_at) == ("file-id-1", "image/jpeg", None, T0 + 60)
    assert await store.media.valid(item.token) == item
    clock.advance(59.9)
    assert await store.media.valid(item.token) == item
    clock.advance(0.1)
    assert await store.media.valid(item.token) is None


async def test_media_unknown_token(store: Store) -> None:
    item = await store.media.create("f", "image/png", 60)
    assert await store.media.valid("nope") is None
    assert await store.media.valid(item.token[:-1]) is None
    assert await store.media.valid("") is None


async def test_media_with_task(store: Store) -> None:
    task = await store.tasks.create(new_task())
    item = await store.media.create("f", "image/png", 60, task_id=task.id)
    assert (await store.media.valid(item.token)).task_id == task.id


async def test_media_purge(store: Store, clock: Clock) -> None:
    short = await store.media.create("a", "image/png", 10)
    long = await store.media.create("b", "image/png", 100)
    assert await store.media.purge_expired() == 0
    clock.advance(10)
    assert await store.media.purge_expired() == 1
    clock.advance(-5)  # even if the clock goes back, a purged token stays gone
    assert await store.media.valid(short.token) is None
    assert await store.media.valid(long.token) is not None


async def test_media_tokens_unguessable(store: Store) -> None:
    tokens = [(await store.media.create(f"f{i}", "image/png", 60)).token for i in range(50)]
    assert len(set(tokens)) == 50
    for token in tokens:
        assert len(token) >= 32
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token), token  # safe in a URL path
    assert all(token not in {f"f{i}" for i in range(50)} for token in tokens)


async def test_release_leases_makes_leased_rows_due_at_once(store: Store, clock: Clock) -> None:
    task = await store.tasks.create(new_task())
    await store.tasks.create(new_task())
    leased = await store.tasks.lease_due([S.QUEUED], 1, 150)
    assert await store.tasks.release_leases() == 1  # only the leased row
    again = await store.tasks.get(leased[0].id)
    assert again is not None and again.lease_token is None and again.next_run_at <= clock()
    assert task.id == leased[0].id
