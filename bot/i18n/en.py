"""English messages. Keys and {placeholders} must match zh.py (a test checks)."""

MESSAGES: dict[str, str] = {
    # /start and /help
    "help": (
        "<b>Drawbridge</b> turns your words and photos into pictures, using several AI image services.\n\n"
        "<b>Create</b>\n"
        "/imagine <i>a red fox in the snow --ar 16:9</i>\n"
        "In a private chat, any text works as a prompt.\n\n"
        "<b>Photos</b>\n"
        "Send a photo with a caption saying what to change, or reply to a photo with "
        "/edit <i>instruction</i>, /upscale, /anime, /removebg or /describe. "
        "/faceswap: an album of two photos (face first), or follow the steps.\n\n"
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
    "err_provider_disabled": "{provider} is switched off right now: its credentials or credit need the operator's attention. Leave out --provider to use another vendor.",
    "err_vendor_prompt_limit": "The prompt is {length} characters; the vendors that can do this take at most {limit}. Please shorten it.",
    "err_none_capable": "No vendor available right now can do that ({capability}). Please try again later.",
    # Limits
    "err_banned_words": "Your prompt contains words that are not allowed here. Please rephrase it.",
    "err_too_many_active": "You already have {count} tasks in progress (at most {limit}). Wait for one to finish, or /cancel one.",
    # Task progress
    "status_starting": "🎨 Starting…\n<b>{prompt}</b>",
    "status_queued": "⏳ Queued — position {position}\n<b>{prompt}</b>",
    "status_submitting": "📨 Sending to {vendor}…\n<b>{prompt}</b>",
    "status_vendor_queue": "⏳ Waiting at {vendor} — position {position}\n<b>{prompt}</b>",
    "status_running": "🎨 {bar} {percent}%\n<b>{prompt}</b>",
    "status_running_no_progress": "🎨 Drawing at {vendor}…\n<b>{prompt}</b>",
    "status_retrying": "🔁 {vendor} is busy; trying again shortly…\n<b>{prompt}</b>",
    "status_delivering": "📤 Sending the result…\n<b>{prompt}</b>",
    # Results
    "caption": "<b>{prompt}</b>\n{vendor} · task #{task_id}",
    "caption_revised": "✏️ Drawn as: <i>{prompt}</i>",
    "modal_ask": "✏️ Task #{task_id}: Midjourney needs your words for this step. Reply to this message with the prompt (for Custom Zoom add e.g. --zoom 1.8).",
    "modal_already": "Task #{task_id} has its text already; it goes on.",
    "modal_sent": "✅ Sent. Task #{task_id} goes on.",
    "modal_failed": "❌ The vendor did not take that text: {reason}",
    "blend_needs_images": "Send an album of {low}–{high} photos with the caption /blend (add --ar 2:3 or 3:2 for the shape).",
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
    "fail_interrupted": "❌ The bot restarted twice while this image was being made, so it was stopped. Please try again.",
    "fail_cancelled_at_vendor": "❌ The job was cancelled at the vendor. Please try again.",
    "fail_not_found": "❌ The vendor lost this job. Please try again.",
    "fail_malformed": "❌ The vendor answered with something we could not read. Please try again.",
    "fail_error": "❌ Something went wrong with this task. Please try again.",
    "fail_deadline": "❌ Not finished within the time limit ({minutes} min), so it was stopped. Please try again.",
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
    # Photos, faceswap, tasks, buttons, settings, vendors
    "err_unsupported_file": "I can only work with images: JPEG, PNG or WEBP.",
    "err_file_too_big": "That file is {size} MB; Telegram lets bots download at most {limit} MB.",
    "err_edit_needs_instruction": "Say what to change, e.g. /edit make it snowy",
    "err_reply_to_photo": "Send {command} as a reply to a photo.",
    "err_daily_limit": "You have reached today's limit of {limit} tasks. Failed tasks do not count; please come back tomorrow.",
    "err_unknown_command": "I don't know that command. See /help.",
    "photo_what_next": "What should I do with this photo? Send it with a caption saying what to change, or reply to it with /edit, /upscale or /faceswap.",
    "faceswap_send_face": "Send the photo with the face to use (or /cancel).",
    "faceswap_send_target": "Now send the photo to put that face on (or /cancel).",
    "faceswap_album_needs_two": "For /faceswap send exactly two photos in the album: first the face, then the target.",
    "flow_cancelled": "Cancelled.",
    "cancel_usage": "Nothing to cancel. To cancel a task: /cancel &lt;id&gt; (see /tasks).",
    "task_cancelled": "🚫 Task #{task_id} cancelled.",
    "task_cannot_cancel": "Task #{task_id} is already {status}; it can no longer be cancelled.",
    "task_not_found": "You have no task #{task_id}.",
    "task_usage": "Usage: /task &lt;id&gt; (see /tasks for ids).",
    "task_title": "{icon} <b>Task #{task_id}</b> · {status}",
    "task_what": "{kind} · {vendor} · {took}",
    "task_error": "Reason: {kind}",
    "tasks_footer": "Details and the result again: /task &lt;id&gt;",
    "btn_invalid": "This button is not valid (any more).",
    "btn_not_allowed": "Only {who} can use these buttons here.",
    "who_requester": "the person who asked (or an admin)",
    "who_admins": "group admins",
    "btn_started": "On it: task #{task_id}",
    "btn_already": "Already on it: task #{task_id}",
    "settings_title": "<b>Settings</b>",
    "settings_rows": "Rows: language · default vendor · aspect ratio · number of images",
    "settings_group_row": "Last row, for admins of {title}: who may press result buttons",
    "settings_auto": "auto",
    "settings_saved": "Saved ✅",
    "settings_admins_only": "Only group admins can change this.",
    "policy_anyone": "anyone",
    "policy_requester": "requester",
    "policy_admins": "admins",
    "providers_header": "<b>Vendors</b>",
    "providers_default": " (default)",
    "provider_models": "   models (--model): {models}",
    "provider_line": "• <b>{vendor}</b>{default} — {title}\n   {capabilities} · {health}",
    "providers_no_public_url": "<i>PUBLIC_BASE_URL is not set: vendors that fetch images by URL or send callbacks are limited.</i>",
    "cmd_edit": "Edit a photo (reply to it)",
    "cmd_upscale": "Upscale a photo (reply to it)",
    "cmd_faceswap": "Put a face onto another photo",
    "cmd_settings": "Language, vendor, size",
    "cmd_providers": "Vendors and what they can do",
    "cmd_cancel": "Cancel a task",
    "cmd_task": "Task details and result",
    "fail_bad_input": "❌ The input image could not be used (damaged or unsupported). Please send another one.",
    "describe_result": "📝 <b>Description</b> (task #{task_id})\n{text}",
    "cmd_anime": "Turn a photo into anime art (reply to it)",
    "cmd_removebg": "Remove a photo's background (reply to it)",
    "cmd_blend": "Blend 2–5 photos (an album with /blend)",
    "cmd_describe": "Describe a photo in words (reply to it)",
    "err_admins_only": "Only the bot's admins can use this.",
    "stats_header": "<b>Last 24 hours</b>: {total} tasks",
    "stats_summary": "Failure rate {rate} · median time to result {median}",
}
