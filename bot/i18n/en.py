"""English messages. Keys and {placeholders} must match zh.py (a test checks)."""

MESSAGES: dict[str, str] = {
    # /start and /help
    "help": (
        "<b>Drawbridge</b> turns your words and photos into pictures, using several AI image services.\n\n"
        "<b>Create</b>\n"
        "/imagine <i>a red fox in the snow --ar 16:9</i>\n"
        "In a private chat, any text works as a prompt.\n\n"
        "<b>Flags</b>\n"
        "--ar W:H (aspect ratio) · --size WxH · --n 1-4 (images) · --seed N · --no <i>words</i> (leave out) · "
        "--steps N · --cfg N · --strength 0-1 · --model ID · --provider ID\n\n"
        "<b>More</b>\n"
        "/tasks – your recent tasks · /task <i>id</i> – details and resend · /cancel <i>id</i>\n"
        "/settings – language, default vendor, size · /providers – vendors and what they can do\n\n"
        "Under each result: U = upscale, V = variations, 🔄 = try again."
    ),
    "start_greeting": "Hello, {name}! 👋",
    # Commands menu (setMyCommands)
    "cmd_imagine": "Create an image from a text prompt",
    "cmd_tasks": "Your recent tasks",
    "cmd_help": "How to use the bot",
    "cmd_start": "Start",
    # Parse errors: one line naming the flag and what is allowed
    "err_empty_prompt": "Write what to draw after the command, e.g. /imagine a red fox --ar 16:9",
    "err_prompt_too_long": "The prompt is too long: {length} characters, at most {limit}.",
    "err_unknown_flag": "Unknown flag {flag}. Known flags: {known}.",
    "err_flag_needs_value": "{flag} needs a value, e.g. {flag} {example}.",
    "err_flag_twice": "{flag} is given twice.",
    "err_bad_ar": "{flag} must be W:H with sides 1–{max_side} and a ratio between 1:4 and 4:1, e.g. 16:9.",
    "err_bad_size": "{flag} must be WxH with each side {low}–{high}, e.g. 1024x768.",
    "err_bad_int": "{flag} must be a whole number from {low} to {high}.",
    "err_bad_float": "{flag} must be a number from {low} to {high}.",
    "err_bad_id": "{flag} must be a short name (letters, digits, . _ -).",
    # Routing
    "err_unknown_provider": "There is no vendor called {provider}. Try /providers.",
    "err_provider_cannot": "{provider} cannot do that ({capability}). Leave out --provider, or see /providers.",
    "err_none_capable": "No vendor available right now can do that ({capability}). Please try again later.",
    # Limits
    "err_banned_words": "Your prompt contains words that are not allowed here. Please rephrase it.",
    "err_too_many_active": "You already have {count} tasks in progress (at most {limit}). Wait for one to finish, or /cancel one.",
    # Task progress
    "status_queued": "⏳ Queued — position {position}\n<b>{prompt}</b>",
    "status_submitting": "📨 Sending to {vendor}…\n<b>{prompt}</b>",
    "status_vendor_queue": "⏳ Waiting at {vendor} — position {position}\n<b>{prompt}</b>",
    "status_running": "🎨 {bar} {percent}%\n<b>{prompt}</b>",
    "status_running_no_progress": "🎨 Drawing at {vendor}…\n<b>{prompt}</b>",
    "status_retrying": "🔁 {vendor} is busy; trying again shortly…\n<b>{prompt}</b>",
    "status_delivering": "📤 Sending the result…\n<b>{prompt}</b>",
    # Results
    "caption": "<b>{prompt}</b>\n{vendor} · task #{task_id}",
    "caption_sandbox": "🧪 Sandbox image — drawn locally for testing, not by an AI vendor.",
    "grid_prompt": "Pick an image: U = upscale, V = variations, 🔄 = reroll.",
    "btn_upscale": "⬆️ Upscale",
    "btn_vary": "🎲 Vary",
    "btn_reroll": "🔄 Reroll",
    # Failures (by providers.errors kind, plus our own)
    "fail_rejected": "❌ The vendor refused this prompt or image (content rules). Try rewording it.",
    "fail_quota": "❌ The vendor is out of credit. The admins have been told; please try again later.",
    "fail_auth": "❌ The vendor rejected our credentials. The admins have been told; please try again later.",
    "fail_rate_limited": "❌ The vendor is too busy right now. Please try again in a few minutes.",
    "fail_unavailable": "❌ The vendor is not available right now. Please try again later.",
    "fail_timeout": "❌ This took too long and was stopped. Please try again.",
    "fail_bad_request": "❌ The vendor could not accept this request. Try other settings.",
    "fail_not_found": "❌ The vendor lost this job. Please try again.",
    "fail_malformed": "❌ The vendor answered with something we could not read. Please try again.",
    "fail_error": "❌ Something went wrong with this task. Please try again.",
    "fail_deadline": "❌ Not finished within {minutes} minutes, so it was stopped. Please try again.",
    "fail_result_unusable": "❌ The vendor's result could not be downloaded or is not a valid image. Please try again.",
    "fail_cannot_deliver": "❌ The result could not be sent here.",
    "failed_task": "{reason}\n<i>Task #{task_id}: {prompt}</i>",
    # /tasks
    "tasks_none": "You have no tasks yet. Try /imagine a lighthouse at dusk",
    "tasks_header": "<b>Your recent tasks</b>",
    "task_line": "{icon} #{task_id} · {status} · {prompt}",
    "st_queued": "queued",
    "st_submitted": "submitted",
    "st_running": "running",
    "st_succeeded": "sending",
    "st_delivered": "done",
    "st_failed": "failed",
    "st_cancelled": "cancelled",
    # Errors from handlers
    "err_internal": "Sorry, something went wrong. Please try again.",
}
