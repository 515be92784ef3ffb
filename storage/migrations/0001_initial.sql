-- Users, chats and the task table that drives every background step.

CREATE TABLE users (
    id              INTEGER PRIMARY KEY,        -- Telegram user id
    language_code   TEXT,                       -- as Telegram last reported it
    language        TEXT,                       -- override from /settings
    default_provider TEXT,
    aspect_ratio    TEXT,
    image_count     INTEGER,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);

CREATE TABLE chats (
    id              INTEGER PRIMARY KEY,        -- Telegram chat id
    type            TEXT NOT NULL,
    title           TEXT,
    buttons_policy  TEXT NOT NULL DEFAULT 'anyone',
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);

CREATE TABLE tasks (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    kind                TEXT NOT NULL,          -- a providers.types.Capability
    status              TEXT NOT NULL,          -- storage.models.TaskStatus
    user_id             INTEGER NOT NULL,
    chat_id             INTEGER NOT NULL,
    chat_type           TEXT NOT NULL,
    thread_id           INTEGER,
    request_message_id  INTEGER,                -- the message this task answers
    status_message_id   INTEGER,                -- our progress message
    language            TEXT NOT NULL,
    params              TEXT NOT NULL,          -- GenerationParams as JSON
    inputs              TEXT NOT NULL DEFAULT '[]',  -- input images (Telegram file ids)
    source              TEXT,                   -- SourceResult JSON, for actions
    parent_task_id      INTEGER REFERENCES tasks(id),
    action_key          TEXT,                   -- one task per (parent, action, index)
    provider            TEXT,                   -- requested, then the one that accepted
    provider_job_id     TEXT,
    business_id         TEXT NOT NULL,          -- our id for the vendor job
    callback_token      TEXT,                   -- authenticates vendor callbacks
    progress            REAL,
    queue_position      INTEGER,                -- at the vendor, when it says
    result_meta         TEXT,                   -- JSON: is_grid, vendor_data
    attempts            INTEGER NOT NULL DEFAULT 0,  -- of the current step
    polls               INTEGER NOT NULL DEFAULT 0,
    -- When the row is next due for its current step. A worker leases a row by
    -- pushing next_run_at forward and setting lease_token; if it dies, the
    -- row simply comes due again.
    next_run_at         REAL NOT NULL,
    lease_token         TEXT,
    deadline_at         REAL NOT NULL,
    error_kind          TEXT,
    error_detail        TEXT,
    created_at          REAL NOT NULL,
    updated_at          REAL NOT NULL,
    submitted_at        REAL,
    finished_at         REAL,
    delivered_at        REAL
);

-- Due work is found through this index, never by scanning.
CREATE INDEX tasks_due ON tasks (status, next_run_at);
CREATE INDEX tasks_by_user ON tasks (user_id, created_at);
-- A redelivered update (same chat and message) cannot create a second task.
CREATE UNIQUE INDEX tasks_by_request ON tasks (chat_id, request_message_id)
    WHERE request_message_id IS NOT NULL AND parent_task_id IS NULL;
CREATE UNIQUE INDEX tasks_by_action ON tasks (action_key) WHERE action_key IS NOT NULL;
CREATE UNIQUE INDEX tasks_by_callback ON tasks (callback_token) WHERE callback_token IS NOT NULL;

CREATE TABLE task_images (
    task_id     INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    url         TEXT,                           -- vendor URL (expires)
    data        BLOB,                           -- downloaded bytes, until delivered
    mime        TEXT,
    width       INTEGER,
    height      INTEGER,
    seed        INTEGER,
    file_id     TEXT,                           -- Telegram file_id once sent
    message_id  INTEGER,
    PRIMARY KEY (task_id, idx)
);

-- Input images served to vendors at /media/<token>.
CREATE TABLE media (
    token       TEXT PRIMARY KEY,
    file_id     TEXT NOT NULL,
    mime        TEXT NOT NULL,
    task_id     INTEGER REFERENCES tasks(id) ON DELETE CASCADE,
    expires_at  REAL NOT NULL
);
CREATE INDEX media_by_expiry ON media (expires_at);
