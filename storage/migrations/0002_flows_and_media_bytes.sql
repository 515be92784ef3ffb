-- Multi-step conversations (the guided /faceswap), kept across restarts.
CREATE TABLE flows (
    chat_id     INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL DEFAULT '{}',
    expires_at  REAL NOT NULL,
    PRIMARY KEY (chat_id, user_id)
);

-- Media items may also be bytes we made (a quadrant cut from a grid), not
-- only Telegram files. The rows are short-lived links, so rebuilding is safe.
DROP TABLE media;
CREATE TABLE media (
    token       TEXT PRIMARY KEY,
    file_id     TEXT,                           -- a Telegram file, or
    data        BLOB,                           -- bytes we produced
    mime        TEXT NOT NULL,
    task_id     INTEGER REFERENCES tasks(id) ON DELETE CASCADE,
    expires_at  REAL NOT NULL,
    CHECK ((file_id IS NULL) <> (data IS NULL))
);
CREATE INDEX media_by_expiry ON media (expires_at);
