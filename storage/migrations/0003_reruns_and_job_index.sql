-- A job that lived only in the bot process (a synchronous vendor call:
-- OpenAI, a local engine) is lost when the process dies; the task is run
-- again, once. `reruns` counts those second chances.
ALTER TABLE tasks ADD COLUMN reruns INTEGER NOT NULL DEFAULT 0;

-- Such a call reports back by its job id, without an HTTP callback token.
CREATE INDEX tasks_by_job ON tasks (provider, provider_job_id) WHERE provider_job_id IS NOT NULL;
