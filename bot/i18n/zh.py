"""中文消息。键和 {占位符} 必须与 en.py 一致（有测试检查）。"""

MESSAGES: dict[str, str] = {
    "help": (
        "<b>Drawbridge</b> 用多家 AI 绘图服务，把你的文字和照片变成图片。\n\n"
        "<b>创作</b>\n"
        "/imagine <i>雪地里的一只红狐狸 --ar 16:9</i>\n"
        "在私聊中，直接发送文字即可作为提示词。\n\n"
        "<b>参数</b>\n"
        "--ar 宽:高（比例）· --size 宽x高 · --n 1-4（张数）· --seed 数字 · --no <i>不要的内容</i> · "
        "--steps 步数 · --cfg 数值 · --strength 0-1 · --model 模型 · --provider 服务商\n\n"
        "<b>更多</b>\n"
        "/tasks – 最近的任务 · /task <i>编号</i> – 详情与重发 · /cancel <i>编号</i>\n"
        "/settings – 语言、默认服务商、尺寸 · /providers – 服务商及其能力\n\n"
        "每个结果下方：U = 放大，V = 变体，🔄 = 重新生成。"
    ),
    "start_greeting": "你好，{name}！👋",
    "cmd_imagine": "根据文字生成图片",
    "cmd_tasks": "最近的任务",
    "cmd_help": "使用说明",
    "cmd_start": "开始",
    "err_empty_prompt": "请在命令后写上要画的内容，例如 /imagine 一只红狐狸 --ar 16:9",
    "err_prompt_too_long": "提示词太长：{length} 个字符，最多 {limit} 个。",
    "err_unknown_flag": "未知参数 {flag}。可用参数：{known}。",
    "err_flag_needs_value": "{flag} 需要一个值，例如 {flag} {example}。",
    "err_flag_twice": "{flag} 重复出现了。",
    "err_bad_ar": "{flag} 应为 宽:高，每边 1–{max_side}，比例在 1:4 到 4:1 之间，例如 16:9。",
    "err_bad_size": "{flag} 应为 宽x高，每边 {low}–{high}，例如 1024x768。",
    "err_bad_int": "{flag} 应为 {low} 到 {high} 之间的整数。",
    "err_bad_float": "{flag} 应为 {low} 到 {high} 之间的数字。",
    "err_bad_id": "{flag} 应为简短的名称（字母、数字、. _ -）。",
    "err_unknown_provider": "没有名为 {provider} 的服务商。请查看 /providers。",
    "err_provider_cannot": "{provider} 不支持此操作（{capability}）。去掉 --provider，或查看 /providers。",
    "err_none_capable": "目前没有可用的服务商能完成此操作（{capability}）。请稍后再试。",
    "err_banned_words": "你的提示词包含此处不允许的词语。请换个说法。",
    "err_too_many_active": "你已有 {count} 个任务在进行中（最多 {limit} 个）。请等待完成，或用 /cancel 取消一个。",
    "status_queued": "⏳ 排队中 — 第 {position} 位\n<b>{prompt}</b>",
    "status_submitting": "📨 正在提交给 {vendor}…\n<b>{prompt}</b>",
    "status_vendor_queue": "⏳ 在 {vendor} 排队 — 第 {position} 位\n<b>{prompt}</b>",
    "status_running": "🎨 {bar} {percent}%\n<b>{prompt}</b>",
    "status_running_no_progress": "🎨 {vendor} 正在绘制…\n<b>{prompt}</b>",
    "status_retrying": "🔁 {vendor} 繁忙，稍后自动重试…\n<b>{prompt}</b>",
    "status_delivering": "📤 正在发送结果…\n<b>{prompt}</b>",
    "caption": "<b>{prompt}</b>\n{vendor} · 任务 #{task_id}",
    "caption_sandbox": "🧪 沙盒图片 — 本地绘制用于测试，并非 AI 服务商生成。",
    "grid_prompt": "选择一张：U = 放大，V = 变体，🔄 = 重新生成。",
    "btn_upscale": "⬆️ 放大",
    "btn_vary": "🎲 变体",
    "btn_reroll": "🔄 重新生成",
    "fail_rejected": "❌ 服务商拒绝了此提示词或图片（内容规则）。请换个说法再试。",
    "fail_quota": "❌ 服务商余额不足。已通知管理员，请稍后再试。",
    "fail_auth": "❌ 服务商拒绝了我们的凭证。已通知管理员，请稍后再试。",
    "fail_rate_limited": "❌ 服务商当前过于繁忙。请几分钟后再试。",
    "fail_unavailable": "❌ 服务商暂时不可用。请稍后再试。",
    "fail_timeout": "❌ 处理时间过长，已停止。请再试一次。",
    "fail_bad_request": "❌ 服务商无法接受此请求。请换个设置再试。",
    "fail_not_found": "❌ 服务商丢失了这个任务。请再试一次。",
    "fail_malformed": "❌ 服务商返回了无法识别的内容。请再试一次。",
    "fail_error": "❌ 任务出错了。请再试一次。",
    "fail_deadline": "❌ {minutes} 分钟内未完成，已停止。请再试一次。",
    "fail_result_unusable": "❌ 服务商的结果无法下载或不是有效图片。请再试一次。",
    "fail_cannot_deliver": "❌ 结果无法发送到这里。",
    "failed_task": "{reason}\n<i>任务 #{task_id}：{prompt}</i>",
    "tasks_none": "你还没有任务。试试 /imagine 黄昏时的灯塔",
    "tasks_header": "<b>最近的任务</b>",
    "task_line": "{icon} #{task_id} · {status} · {prompt}",
    "st_queued": "排队中",
    "st_submitted": "已提交",
    "st_running": "生成中",
    "st_succeeded": "发送中",
    "st_delivered": "已完成",
    "st_failed": "失败",
    "st_cancelled": "已取消",
    "err_internal": "抱歉，出了点问题。请再试一次。",
}
