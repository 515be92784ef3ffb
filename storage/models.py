"""Rows as typed objects. Plain dataclasses: the repository fills them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TaskStatus(StrEnum):
    QUEUED = "queued"  # stored, waiting for the dispatcher
    SUBMITTED = "submitted"  # a vendor accepted it
    RUNNING = "running"  # the vendor reports work in progress
    SUCCEEDED = "succeeded"  # result known; waiting for delivery (the outbox)
    DELIVERED = "delivered"  # Telegram accepted the result
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in ACTIVE_STATUSES

    @property
    def final(self) -> bool:
        return self in (TaskStatus.DELIVERED, TaskStatus.FAILED, TaskStatus.CANCELLED)


ACTIVE_STATUSES = frozenset({TaskStatus.QUEUED, TaskStatus.SUBMITTED, TaskStatus.RUNNING})
AT_VENDOR = (TaskStatus.SUBMITTED, TaskStatus.RUNNING)


@dataclass(frozen=True)
class Task:
    id: int
    kind: str
    status: TaskStatus
    user_id: int
    chat_id: int
    chat_type: str
    thread_id: int | None
    request_message_id: int | None
    status_message_id: int | None
    language: str
    params: dict[str, Any]
    inputs: list[dict[str, Any]]
    source: dict[str, Any] | None
    parent_task_id: int | None
    action_key: str | None
    provider: str | None
    provider_job_id: str | None
    business_id: str
    callback_token: str | None
    progress: float | None
    queue_position: int | None
    result_meta: dict[str, Any]
    attempts: int
    polls: int
    reruns: int
    next_run_at: float
    lease_token: str | None
    deadline_at: float
    error_kind: str | None
    error_detail: str | None
    created_at: float
    updated_at: float
    submitted_at: float | None
    finished_at: float | None
    delivered_at: float | None

    @classmethod
    def from_row(cls, row: Any) -> Task:
        data = dict(row)
        data["status"] = TaskStatus(data["status"])
        data["params"] = json.loads(data["params"])
        data["inputs"] = json.loads(data["inputs"])
        data["source"] = json.loads(data["source"]) if data["source"] else None
        data["result_meta"] = json.loads(data["result_meta"]) if data["result_meta"] else {}
        return cls(**data)

    @property
    def in_group(self) -> bool:
        return self.chat_type in ("group", "supergroup")


@dataclass(frozen=True)
class NewTask:
    kind: str
    user_id: int
    chat_id: int
    chat_type: str
    language: str
    params: dict[str, Any]
    deadline_at: float
    request_message_id: int | None = None
    thread_id: int | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    source: dict[str, Any] | None = None
    parent_task_id: int | None = None
    action_key: str | None = None
    provider: str | None = None


@dataclass(frozen=True)
class TaskImage:
    task_id: int
    idx: int
    url: str | None
    data: bytes | None
    mime: str | None
    width: int | None
    height: int | None
    seed: int | None
    file_id: str | None
    message_id: int | None

    @classmethod
    def from_row(cls, row: Any) -> TaskImage:
        return cls(**dict(row))


@dataclass(frozen=True)
class User:
    id: int
    language_code: str | None
    language: str | None
    default_provider: str | None
    aspect_ratio: str | None
    image_count: int | None

    @classmethod
    def from_row(cls, row: Any) -> User:
        data = dict(row)
        data.pop("created_at", None)
        data.pop("updated_at", None)
        return cls(**data)


@dataclass(frozen=True)
class Chat:
    id: int
    type: str
    title: str | None
    buttons_policy: str

    @classmethod
    def from_row(cls, row: Any) -> Chat:
        data = dict(row)
        data.pop("created_at", None)
        data.pop("updated_at", None)
        return cls(**data)
