/*  pconfig_schema - every configuration setting, its default and its meaning.

    This table is the single source of truth for configuration: the loader
    validates against it, `parleyctl config sample` prints it as an annotated
    file and `parleyctl config reference` as the README's reference tables.
    To add a setting: add the field to pcfg_t (pconfig.h) and a row here.
*/
#include "common/pconfig_schema.h"

#include <float.h>

#define ANY  1, 0   //  no numeric bounds
#define NONE NULL

#define F_INT(T, k, f, def, lo, hi, env, doc)                                                      \
    {k, PCFG_INT, offsetof (T, f), def, lo, hi, NULL, env, 0, NULL, NULL, doc}
#define F_NUM(T, k, f, def, lo, hi, env, doc)                                                      \
    {k, PCFG_NUM, offsetof (T, f), def, lo, hi, NULL, env, 0, NULL, NULL, doc}
#define F_BOOL(T, k, f, def, doc) {k, PCFG_BOOL, offsetof (T, f), def, ANY, NULL, NULL, 0, NULL, NULL, doc}
#define F_BOOL_ENV(T, k, f, def, env, doc)                                                         \
    {k, PCFG_BOOL, offsetof (T, f), def, ANY, NULL, env, 0, NULL, NULL, doc}
#define F_STR(T, k, f, def, choices, env, doc)                                                     \
    {k, PCFG_STR, offsetof (T, f), def, ANY, choices, env, 0, NULL, NULL, doc}
#define F_REQ_STR(T, k, f, example, doc)                                                           \
    {k, PCFG_STR, offsetof (T, f), NULL, ANY, NULL, NULL, PCFG_REQUIRED, NULL, example, doc}
#define F_STRS(T, k, f, def, doc) {k, PCFG_STRS, offsetof (T, f), def, ANY, NULL, NULL, 0, NULL, NULL, doc}
#define F_JSON(T, k, f, def, doc) {k, PCFG_JSON, offsetof (T, f), def, ANY, NULL, NULL, 0, NULL, NULL, doc}
#define F_OBJ(T, k, f, sub, doc)  {k, PCFG_OBJ, offsetof (T, f), "{}", ANY, NULL, NULL, 0, &sub, NULL, doc}
#define F_SECTION(k, sub, doc)    {k, PCFG_OBJ, 0, "{}", ANY, NULL, NULL, 0, &sub, NULL, doc}
#define F_ARR(T, k, f, def, sub, doc)                                                              \
    {k, PCFG_ARR, offsetof (T, f), def, ANY, NULL, NULL, 0, &sub, NULL, doc}
#define F_IGNORE(k, doc) {k, PCFG_IGNORE, 0, NULL, ANY, NULL, NULL, 0, NULL, NULL, doc}
#define SCHEMA(name, T, fields) {name, sizeof (T), fields, sizeof (fields) / sizeof (fields[0])}

#define MAX_I 9.0e15

//  --- rateLimits (entities[].rateLimits and chatLimits[]) -------------------

static const pcfg_field_t s_rate_fields[] = {
    F_NUM (pcfg_rate_t, "minSecondsBetweenPosts", min_seconds_between_posts, "0", 0, 86400, NONE,
           "Minimum seconds between two posts; 0 means no minimum gap."),
    F_INT (pcfg_rate_t, "maxPostsPerMinute", max_posts_per_minute, "0", 0, MAX_I, NONE,
           "At most this many posts in any 60-second window; 0 means unlimited."),
    F_INT (pcfg_rate_t, "maxPostsPerHour", max_posts_per_hour, "0", 0, MAX_I, NONE,
           "At most this many posts in any 3600-second window; 0 means unlimited."),
};
static const pcfg_schema_t s_rate_schema = SCHEMA ("rateLimits", pcfg_rate_t, s_rate_fields);

//  --- entities[] ------------------------------------------------------------

static const pcfg_field_t s_entity_fields[] = {
    F_REQ_STR (pcfg_entity_t, "id", id, "\"philosopher\"",
               "Stable identifier of the persona; used in logs, stats and the posted-reply key."),
    F_STR (pcfg_entity_t, "name", name, "\"\"", NULL, NONE,
           "Display name that counts as a mention (\"@name\", case-insensitive); empty means the id."),
    F_STRS (pcfg_entity_t, "aliases", aliases, "[]", "Other names that also count as a mention."),
    F_BOOL (pcfg_entity_t, "enabled", enabled, "true", "A disabled entity is never selected."),
    F_NUM (pcfg_entity_t, "responseChance", response_chance, "0.15", 0, 1, NONE,
           "Chance (0..1) of answering a message that does not address this entity."),
    F_OBJ (pcfg_entity_t, "rateLimits", rate, s_rate_schema,
           "This entity's own limits on posts, checked at dispatch."),
    F_INT (pcfg_entity_t, "maxInFlight", max_in_flight, "0", 0, MAX_I, NONE,
           "Jobs of this entity being written at once; 0 means queueSettings.perEntityMaxInFlight."),
    F_INT (pcfg_entity_t, "maxAgeSeconds", max_age_seconds, "0", 0, MAX_I, NONE,
           "A reply later than this after the message is dropped as expired; 0 means queueSettings.maxAgeSeconds."),
    F_STR (pcfg_entity_t, "systemPrompt", system_prompt, "\"\"", NULL, NONE,
           "The persona: the system prompt given to the LLM."),
    F_STR (pcfg_entity_t, "model", model, "\"\"", NULL, NONE,
           "LLM model name; empty means the server's default model."),
    F_NUM (pcfg_entity_t, "temperature", temperature, "0.8", 0, 2, NONE, "Sampling temperature."),
    F_INT (pcfg_entity_t, "maxTokens", max_tokens, "150", 1, 1000000, NONE,
           "Upper bound on the reply's length in tokens."),
    F_INT (pcfg_entity_t, "messagesToRead", messages_to_read, "10", 0, 200, NONE,
           "How many earlier chat messages are given to the LLM as context."),
    F_STRS (pcfg_entity_t, "stop", stop, "[]", "Stop sequences passed to the LLM."),
    F_STRS (pcfg_entity_t, "templates", templates, "[]",
            "Replies of the built-in template backend; {author}, {text}, {name} and {topic} are filled in."),
    F_STRS (pcfg_entity_t, "allowChats", allow_chats, "[]",
            "If not empty, this entity answers only in these chats (chat keys, \"source/chat\")."),
    F_STRS (pcfg_entity_t, "denyChats", deny_chats, "[]", "This entity never answers in these chats."),
    F_BOOL (pcfg_entity_t, "answerBots", answer_bots, "false",
            "May answer messages written by other bots (never its own)."),
    F_INT (pcfg_entity_t, "defaultPriority", default_priority, "-1", -1, 99, NONE,
           "Priority of this entity's replies to messages that do not address it; 99 means it never answers those; -1 means the source's, else queueSettings.defaultPriority."),
    F_INT (pcfg_entity_t, "mentionPriority", mention_priority, "-1", -1, 99, NONE,
           "Priority of this entity's replies to mentions of it and replies to it; -1 means the source's, else queueSettings.mentionPriority."),
};
static const pcfg_schema_t s_entity_schema = SCHEMA ("entities[]", pcfg_entity_t, s_entity_fields);

//  --- lmStudioServers[] -----------------------------------------------------

static const pcfg_field_t s_llm_fields[] = {
    F_STR (pcfg_llm_server_t, "name", name, "\"\"", NULL, NONE, "Name used in logs and stats."),
    {"url", PCFG_STR, offsetof (pcfg_llm_server_t, url), "\"\"", ANY, NULL, NULL, 0, NULL,
     "\"http://127.0.0.1:8080\"", "Base URL of an OpenAI-compatible server, e.g. http://10.0.0.102:1234."},
    F_STR (pcfg_llm_server_t, "ip", ip, "\"\"", NULL, NONE,
           "Host of the server when url is not given (the seeds' shape)."),
    F_INT (pcfg_llm_server_t, "port", port, "1234", 1, 65535, NONE, "Port used with ip."),
    F_BOOL (pcfg_llm_server_t, "enabled", enabled, "true", "A disabled server is not used."),
    F_INT (pcfg_llm_server_t, "weight", weight, "1", 1, 1000, NONE,
           "Share of calls this server gets relative to the others."),
    F_INT (pcfg_llm_server_t, "maxConcurrent", max_concurrent, "4", 1, 100000, NONE,
           "Calls in flight to this server at once, per worker process."),
    F_STRS (pcfg_llm_server_t, "models", models, "[]",
            "Models this server can serve; empty means ask the server (/v1/models)."),
    F_STR (pcfg_llm_server_t, "apiKeyEnv", api_key_env, "\"\"", NULL, NONE,
           "Environment variable holding the API key (the key itself never appears in the file)."),
    F_STR (pcfg_llm_server_t, "apiKeyFile", api_key_file, "\"\"", NULL, NONE,
           "File whose first line is the API key, used when apiKeyEnv is empty (e.g. a Docker secret)."),
    F_STR (pcfg_llm_server_t, "type", type, "\"openai\"", "openai|llamacpp|lmstudio|ollama|vllm",
           NONE, "Server flavour; selects the health check and how loaded models are listed."),
    F_STR (pcfg_llm_server_t, "maxTokensField", max_tokens_field, "\"auto\"",
           "auto|max_tokens|max_completion_tokens", NONE,
           "Request field for the reply length; auto means max_completion_tokens for api.openai.com and max_tokens for every other server."),
    F_IGNORE ("capabilities", "Accepted for compatibility; not used."),
};
static const pcfg_schema_t s_llm_schema = SCHEMA ("lmStudioServers[]", pcfg_llm_server_t, s_llm_fields);

//  --- chatLimits[] ----------------------------------------------------------

static const pcfg_field_t s_chat_limit_fields[] = {
    F_STR (pcfg_chat_limit_t, "source", source, "\"*\"", NULL, NONE,
           "Source name this rule applies to; \"*\" matches every source."),
    F_STR (pcfg_chat_limit_t, "chatKind", chat_kind, "\"*\"", "group|private|*", NONE,
           "Kind of chat this rule applies to."),
    F_NUM (pcfg_chat_limit_t, "minSecondsBetweenPosts", rate.min_seconds_between_posts, "0", 0,
           86400, NONE, "Minimum seconds between two posts in one chat."),
    F_INT (pcfg_chat_limit_t, "maxPostsPerMinute", rate.max_posts_per_minute, "0", 0, MAX_I, NONE,
           "At most this many posts per chat in any 60-second window; 0 means unlimited."),
    F_INT (pcfg_chat_limit_t, "maxPostsPerHour", rate.max_posts_per_hour, "0", 0, MAX_I, NONE,
           "At most this many posts per chat in any 3600-second window; 0 means unlimited."),
};
static const pcfg_schema_t s_chat_limit_schema =
    SCHEMA ("chatLimits[]", pcfg_chat_limit_t, s_chat_limit_fields);

//  --- poller.sources[] ------------------------------------------------------

static const pcfg_field_t s_source_fields[] = {
    F_REQ_STR (pcfg_source_t, "name", name, "\"demo\"",
               "Unique source name; chat keys are \"name/chat\"."),
    F_STR (pcfg_source_t, "type", type, "\"demo\"", "demo|jsonl|http|telegram|twitch", NONE,
           "Kind of source."),
    F_BOOL (pcfg_source_t, "enabled", enabled, "true", "A disabled source is not read."),
    F_NUM (pcfg_source_t, "ratePerSecond", rate_per_second, "2", 0, 10000000, NONE,
           "demo: chat messages generated per second."),
    F_INT (pcfg_source_t, "chats", chats, "3", 1, 1000000, NONE, "demo: number of chat rooms."),
    F_INT (pcfg_source_t, "users", users, "40", 1, 1000000, NONE, "demo: number of human users."),
    F_NUM (pcfg_source_t, "mentionRate", mention_rate, "0.2", 0, 1, NONE,
           "demo: share of messages that mention an entity."),
    F_INT (pcfg_source_t, "limit", limit, "0", 0, MAX_I, NONE,
           "demo: stop after this many messages; 0 means endless."),
    F_STR (pcfg_source_t, "path", path, "\"-\"", NULL, NONE,
           "jsonl: file of one JSON message per line; \"-\" reads standard input."),
    F_BOOL (pcfg_source_t, "follow", follow, "false",
            "jsonl: keep reading as the file grows (like tail -f)."),
    F_STR (pcfg_source_t, "url", url, "\"\"", NULL, NONE,
           "http: the URL polled (\"{since}\" becomes the newest message time seen, Unix ms); telegram: the Bot API base, empty means https://api.telegram.org; twitch: the IRC server, empty means ircs://irc.chat.twitch.tv:6697."),
    F_JSON (pcfg_source_t, "headers", headers, "{}",
            "http: extra request headers; \"{token}\" in a value becomes the token from tokenEnv."),
    F_STR (pcfg_source_t, "tokenEnv", token_env, "\"\"", NULL, NONE,
           "Environment variable holding the bot token, OAuth token or API key (never written in the file or the logs)."),
    F_INT (pcfg_source_t, "pollingInterval", polling_interval_ms, "0", 0, 86400000, NONE,
           "http: milliseconds between polls while messages come; 0 means botSettings.pollingInterval."),
    F_INT (pcfg_source_t, "maxPollingInterval", max_polling_interval_ms, "0", 0, 86400000, NONE,
           "http: polls of an idle source slow down to this; 0 means four times pollingInterval."),
    F_INT (pcfg_source_t, "pageSize", page_size, "50", 1, 1000000, NONE,
           "http: a response with this many new messages counts as a full page, and the source is polled again at once."),
    F_JSON (pcfg_source_t, "fields", fields, "{}",
            "http: where the message list is (\"list\") and where each message keeps id, chat, chatKind, author, authorId, text, time, replyTo, replyToAuthor and isBot; each a dotted path or a list of paths to try; unset ones use common names."),
    F_STR (pcfg_source_t, "defaultChat", default_chat, "\"main\"", NULL, NONE,
           "http: chat id of messages that carry none (a single-room API)."),
    F_STR (pcfg_source_t, "chatKind", chat_kind, "\"group\"", "group|private", NONE,
           "http: kind of chat of messages that carry none (selects chatLimits rules)."),
    F_INT (pcfg_source_t, "longPollSeconds", long_poll_seconds, "25", 0, 50, NONE,
           "telegram: how long one getUpdates call waits for news; 0 means short polling."),
    F_INT (pcfg_source_t, "timeoutMs", timeout_ms, "30000", 1000, 600000, NONE,
           "http/telegram: time one request may take (telegram adds the long poll)."),
    F_INT (pcfg_source_t, "maxResponseBytes", max_response_bytes, "8388608", 1024, 1073741824, NONE,
           "http/telegram: larger responses are refused and counted as errors."),
    F_STRS (pcfg_source_t, "botAuthors", bot_authors, "[]",
            "Authors (names or ids, any case) whose messages count as a bot's, e.g. \"nightbot\"; entities answer them only with answerBots."),
    F_STRS (pcfg_source_t, "channels", channels, "[]", "twitch: channels to join (without '#')."),
    F_STR (pcfg_source_t, "nick", nick, "\"\"", NULL, NONE,
           "twitch: the login that reads the chat; empty reads anonymously."),
    F_INT (pcfg_source_t, "defaultPriority", default_priority, "-1", -1, 99, NONE,
           "Priority of replies to this source's messages that address nobody; 99 means they are not answered; -1 means queueSettings.defaultPriority."),
    F_INT (pcfg_source_t, "mentionPriority", mention_priority, "-1", -1, 99, NONE,
           "Priority of replies to this source's mentions of an entity; -1 means queueSettings.mentionPriority."),
};
static const pcfg_schema_t s_source_schema = SCHEMA ("poller.sources[]", pcfg_source_t, s_source_fields);

//  --- sink.destinations[] ---------------------------------------------------

static const pcfg_field_t s_account_fields[] = {
    F_REQ_STR (pcfg_account_t, "entity", entity, "\"joker\"", "Entity id this account posts for."),
    F_STR (pcfg_account_t, "tokenEnv", token_env, "\"\"", NULL, NONE,
           "Environment variable holding this account's bot token (telegram) or OAuth token (twitch)."),
    F_STR (pcfg_account_t, "nick", nick, "\"\"", NULL, NONE, "twitch: this account's login."),
};
static const pcfg_schema_t s_account_schema =
    SCHEMA ("sink.destinations[].accounts[]", pcfg_account_t, s_account_fields);

static const pcfg_field_t s_post_limit_fields[] = {
    F_STR (pcfg_post_limit_t, "scope", scope, "\"all\"", "all|chat|group|private", NONE,
           "What is counted: all posts of the account, or those to each chat (any, group or private kind)."),
    F_INT (pcfg_post_limit_t, "count", count, "1", 1, 1000000, NONE, "Posts allowed in the window."),
    F_INT (pcfg_post_limit_t, "perMs", per_ms, "1000", 1, 86400000, NONE, "Length of the sliding window in ms."),
};
static const pcfg_schema_t s_post_limit_schema =
    SCHEMA ("sink.destinations[].limits[]", pcfg_post_limit_t, s_post_limit_fields);

static const pcfg_field_t s_dest_fields[] = {
    F_REQ_STR (pcfg_destination_t, "name", name, "\"console\"", "Unique destination name."),
    F_STR (pcfg_destination_t, "type", type, "\"stdout\"", "stdout|jsonl|http|telegram|twitch", NONE,
           "Kind of destination."),
    F_BOOL (pcfg_destination_t, "enabled", enabled, "true", "A disabled destination posts nothing."),
    F_STR (pcfg_destination_t, "source", source, "\"*\"", NULL, NONE,
           "Replies to messages from this source go here; \"*\" takes every source."),
    F_STR (pcfg_destination_t, "path", path, "\"\"", NULL, NONE, "jsonl: file the replies are appended to."),
    F_STR (pcfg_destination_t, "url", url, "\"\"", NULL, NONE,
           "http: the URL replies are sent to; telegram: the Bot API base, empty means https://api.telegram.org; twitch: the IRC server, empty means ircs://irc.chat.twitch.tv:6697."),
    F_STR (pcfg_destination_t, "method", method, "\"POST\"", "POST|PUT", NONE, "http: request method."),
    F_JSON (pcfg_destination_t, "headers", headers, "{}",
            "http: extra request headers; values are templates like body (\"{token}\" is the token from tokenEnv)."),
    F_JSON (pcfg_destination_t, "body", body, "null",
            "http: JSON body template; \"{text}\", \"{chat_ref}\", \"{msg_ref}\", \"{entity}\", \"{entity_name}\", \"{author}\", \"{msg_key}\", \"{source}\" in strings are filled in; null means a default body with all of them."),
    F_STR (pcfg_destination_t, "tokenEnv", token_env, "\"\"", NULL, NONE,
           "Environment variable holding the bot token, OAuth token or API key of the default account."),
    F_STR (pcfg_destination_t, "nick", nick, "\"\"", NULL, NONE,
           "twitch: login of the default account."),
    F_ARR (pcfg_destination_t, "accounts", accounts, "[]", s_account_schema,
           "Entities that post as their own bot or user; the others post as the default account."),
    F_STR (pcfg_destination_t, "textTemplate", text_template, "\"{text}\"", NULL, NONE,
           "telegram/twitch: text posted; e.g. \"{entity_name}: {text}\" when one account speaks for several entities."),
    F_INT (pcfg_destination_t, "maxLength", max_length, "0", 0, 10000000, NONE,
           "Longest text of one post, in the platform's units; 0 means the platform's limit (Telegram 4096 UTF-16 units, Twitch 500 characters, http none)."),
    F_STR (pcfg_destination_t, "overLength", over_length, "\"split\"", "split|trim", NONE,
           "A longer reply is split into several posts, or trimmed with an ellipsis."),
    F_BOOL (pcfg_destination_t, "platformLimits", platform_limits, "true",
            "Hold posts within the platform's published limits (Telegram 30/s per bot, 20/min per group, 1/s per private chat; Twitch 20 per 30 s per account, 100 as moderator)."),
    F_BOOL (pcfg_destination_t, "moderator", moderator, "false",
            "twitch: the accounts are moderators in the channels, so 100 messages per 30 s apply instead of 20."),
    F_ARR (pcfg_destination_t, "limits", limits, "[]", s_post_limit_schema,
           "Further limits held at this destination, per account, besides the platform's."),
    F_INT (pcfg_destination_t, "timeoutMs", timeout_ms, "30000", 1000, 600000, NONE,
           "Time one post may take: the HTTP request, or Twitch's confirmation of a message; after it the outcome is in doubt."),
    F_NUM (pcfg_destination_t, "limitMarginPercent", limit_margin_percent, "5", 0, 100, NONE,
           "Safety margin of the platform's limits and limits[]: each window is held this many percent longer than the platform counts it..."),
    F_INT (pcfg_destination_t, "limitMarginMs", limit_margin_ms, "100", 0, 3600000, NONE,
           "...and at least this many milliseconds longer, so clock differences and network delay never make the platform see one post too many."),
};
static const pcfg_schema_t s_dest_schema =
    SCHEMA ("sink.destinations[]", pcfg_destination_t, s_dest_fields);

//  --- sections --------------------------------------------------------------

static const pcfg_field_t s_bot_fields[] = {
    F_INT (pcfg_t, "pollingInterval", polling_interval_ms, "30000", 100, 86400000, NONE,
           "Milliseconds between polls of a source that has no interval of its own."),
    F_NUM (pcfg_t, "minSecondsBetweenAnyPost", min_seconds_between_any_post, "0", 0, 86400, NONE,
           "Minimum seconds between any two posts of the whole pipeline; 0 means none."),
    F_INT (pcfg_t, "maxTotalMessagesPerMinute", max_total_messages_per_minute, "0", 0, MAX_I, NONE,
           "At most this many posts of the whole pipeline in any 60-second window; 0 means unlimited."),
    F_INT (pcfg_t, "maxTotalMessagesPerHour", max_total_messages_per_hour, "0", 0, MAX_I, NONE,
           "At most this many posts of the whole pipeline in any hour; 0 means unlimited."),
    F_IGNORE ("websocketPort", "Accepted for compatibility; the stats feed replaces it."),
    F_IGNORE ("enableConsoleLogs", "Accepted for compatibility; see logLevel."),
};
static const pcfg_schema_t s_bot_schema = SCHEMA ("botSettings", pcfg_t, s_bot_fields);

static const pcfg_field_t s_delay_fields[] = {
    F_INT (pcfg_delay_t, "minMs", min_ms, "0", 0, 3600000, NONE, "Shortest delay."),
    F_INT (pcfg_delay_t, "maxMs", max_ms, "0", 0, 3600000, NONE, "Longest delay."),
};
static const pcfg_schema_t s_delay_schema = SCHEMA ("delay", pcfg_delay_t, s_delay_fields);

static const pcfg_field_t s_delays_fields[] = {
    {"urgent", PCFG_OBJ, offsetof (pcfg_t, delay_urgent), "{\"minMs\":1000,\"maxMs\":3000}", ANY,
     NULL, NULL, 0, &s_delay_schema, NULL,
     "Natural delay before answering urgent messages (mentions, replies)."},
    {"normal", PCFG_OBJ, offsetof (pcfg_t, delay_normal), "{\"minMs\":2000,\"maxMs\":5000}", ANY,
     NULL, NULL, 0, &s_delay_schema, NULL, "Natural delay before answering normal messages."},
    {"low", PCFG_OBJ, offsetof (pcfg_t, delay_low), "{\"minMs\":4000,\"maxMs\":8000}", ANY, NULL,
     NULL, 0, &s_delay_schema, NULL, "Natural delay before answering low-priority messages."},
    F_INT (pcfg_t, "urgentBelow", urgent_below, "30", 0, 100, NONE,
           "Priorities below this count as urgent."),
    F_INT (pcfg_t, "lowFrom", low_from, "70", 0, 100, NONE, "Priorities from this up count as low."),
};
static const pcfg_schema_t s_delays_schema = SCHEMA ("queueSettings.responseDelays", pcfg_t, s_delays_fields);

static const pcfg_field_t s_age_class_fields[] = {
    F_INT (pcfg_t, "urgent", max_age_urgent_s, "0", 0, MAX_I, NONE,
           "Urgent replies (mentions, replies to an entity; priority below urgentBelow)."),
    F_INT (pcfg_t, "normal", max_age_normal_s, "300", 0, MAX_I, NONE,
           "Normal replies (chatter picked by responseChance)."),
    F_INT (pcfg_t, "low", max_age_low_s, "120", 0, MAX_I, NONE,
           "Low-priority replies (priority from lowFrom up)."),
};
static const pcfg_schema_t s_age_class_schema =
    SCHEMA ("queueSettings.maxAgeByClass", pcfg_t, s_age_class_fields);

static const pcfg_field_t s_queue_fields[] = {
    F_INT (pcfg_t, "staleClaimTimeout", stale_claim_timeout_ms, "60000", 100, 86400000, NONE,
           "Lease of a dispatched job in ms, renewed by its worker's heartbeats; a silent worker's jobs return to the queue."),
    F_INT (pcfg_t, "maxRetries", max_retries, "3", 0, 1000, NONE,
           "Failed attempts retried before the job goes to the dead-letter queue."),
    F_INT (pcfg_t, "defaultPriority", default_priority, "50", 0, 99, NONE,
           "Priority of a message nobody addressed (0 most urgent, 99 least)."),
    F_INT (pcfg_t, "mentionPriority", mention_priority, "10", 0, 99, NONE,
           "Priority of a mention of, or reply to, an entity."),
    F_INT (pcfg_t, "congestionThreshold", congestion_threshold, "100", 0, MAX_I, NONE,
           "Queue depth above which the broker warns and reports congestion; 0 disables."),
    F_INT (pcfg_t, "maxQueueSize", max_queue_size, "1000000", 1, MAX_I, NONE,
           "Queued jobs at most; beyond it the least urgent job is dropped and counted."),
    F_INT (pcfg_t, "retryBaseMs", retry_base_ms, "1000", 0, 86400000, NONE,
           "Base of the exponential retry backoff (full jitter)."),
    F_INT (pcfg_t, "retryMaxMs", retry_max_ms, "60000", 0, 86400000, NONE,
           "Cap of the exponential retry backoff."),
    F_INT (pcfg_t, "maxAgeSeconds", max_age_seconds, "600", 0, MAX_I, NONE,
           "A reply later than this after its message is dropped as expired; 0 means never."),
    F_INT (pcfg_t, "globalMaxInFlight", global_max_in_flight, "5", 0, MAX_I, NONE,
           "Jobs being written at once across all entities; 0 means unlimited."),
    F_INT (pcfg_t, "perEntityMaxInFlight", entity_max_in_flight, "2", 0, MAX_I, NONE,
           "Jobs being written at once per entity, unless the entity sets maxInFlight; 0 means unlimited."),
    F_INT (pcfg_t, "maxPendingResults", max_pending_results, "20000", 1, MAX_I, NONE,
           "Jobs dispatched but not yet posted, at most; dispatching waits beyond it, so a slow sink or destination is not buried."),
    F_INT (pcfg_t, "maxHoldMs", max_hold_ms, "300000", 1000, 86400000, NONE,
           "Longest time a worker may hold one job, however often it renews the lease; then the job is taken back and retried."),
    F_SECTION ("maxAgeByClass", s_age_class_schema,
               "Shorter freshness limits per priority class (seconds; 0 means only maxAgeSeconds applies): chatter goes stale sooner than a mention."),
    F_INT (pcfg_t, "agingSeconds", aging_seconds, "0", 0, MAX_I, NONE,
           "Every this many seconds of waiting a job counts one priority more urgent; 0 disables aging."),
    F_SECTION ("responseDelays", s_delays_schema,
               "Natural not-before delays by priority class, so replies do not look robotic."),
};
static const pcfg_schema_t s_queue_schema = SCHEMA ("queueSettings", pcfg_t, s_queue_fields);

static const pcfg_field_t s_security_fields[] = {
    F_BOOL_ENV (pcfg_t, "enabled", security, "false", "PARLEY_SECURITY",
                "Encrypt every connection between Parley processes with CurveZMQ and admit only clients whose public key is in the allow-list of their role; off, the daemons bind only loopback addresses unless network.insecure is true."),
    F_STR (pcfg_t, "certificate", cert_path, "\"\"", NULL, "PARLEY_CERT",
           "This process's own key: the secret file written by parleyctl keygen (NAME.key_secret, mode 0600), which never leaves this machine."),
    F_STR (pcfg_t, "brokerKey", broker_key, "\"\"", NULL, "PARLEY_BROKER_KEY",
           "Every process but the broker: the broker's public key file (broker.key); a server without the matching secret key is refused."),
    F_STR (pcfg_t, "sinkKey", sink_key, "\"\"", NULL, "PARLEY_SINK_KEY",
           "Workers and parleyctl: the sink's public key file (sink.key), checked like brokerKey."),
    F_STR (pcfg_t, "allowDir", allow_dir, "\"\"", NULL, "PARLEY_ALLOW_DIR",
           "Broker and sink: directory with pollers/, workers/, sinks/ and operators/, each holding the public key files (NAME.key) that role admits; deleting a file revokes that key at once."),
};
static const pcfg_schema_t s_security_schema = SCHEMA ("network.security", pcfg_t, s_security_fields);

static const pcfg_field_t s_network_fields[] = {
    F_STR (pcfg_t, "brokerFrontend", broker_frontend, "\"tcp://127.0.0.1:7531\"", NULL,
           "PARLEY_BROKER_FRONTEND", "Where pollers, sinks and parleyctl reach the broker."),
    F_STR (pcfg_t, "brokerBackend", broker_backend, "\"tcp://127.0.0.1:7532\"", NULL,
           "PARLEY_BROKER_BACKEND", "Where workers reach the broker."),
    F_STR (pcfg_t, "sinkResults", sink_results, "\"tcp://127.0.0.1:7533\"", NULL,
           "PARLEY_SINK_RESULTS", "Where workers send results to the sink."),
    F_STR (pcfg_t, "statsPublish", stats_publish, "\"tcp://127.0.0.1:7534\"", NULL,
           "PARLEY_STATS_PUBLISH", "Where the sink publishes the live stats feed."),
    F_STR (pcfg_t, "brokerFrontendBind", broker_frontend_bind, "\"\"", NULL,
           "PARLEY_BROKER_FRONTEND_BIND", "Endpoint the broker binds for its frontend; empty means brokerFrontend."),
    F_STR (pcfg_t, "brokerBackendBind", broker_backend_bind, "\"\"", NULL,
           "PARLEY_BROKER_BACKEND_BIND", "Endpoint the broker binds for workers; empty means brokerBackend."),
    F_STR (pcfg_t, "sinkResultsBind", sink_results_bind, "\"\"", NULL, "PARLEY_SINK_RESULTS_BIND",
           "Endpoint the sink binds for results; empty means sinkResults."),
    F_STR (pcfg_t, "statsPublishBind", stats_publish_bind, "\"\"", NULL, "PARLEY_STATS_PUBLISH_BIND",
           "Endpoint the sink binds for stats; empty means statsPublish."),
    F_INT (pcfg_t, "heartbeatMs", heartbeat_ms, "1000", 50, 600000, NONE,
           "Interval of worker and broker heartbeats."),
    F_INT (pcfg_t, "maxFrameBytes", max_frame_bytes, "4194304", 1024, 1073741824, NONE,
           "Largest frame any socket accepts; larger ones are refused by ZeroMQ."),
    F_INT (pcfg_t, "resendMs", resend_ms, "2000", 50, 3600000, NONE,
           "A request not yet answered (SUBMIT, COMMIT, OUTCOME) is sent again after this many ms."),
    F_INT (pcfg_t, "highWaterMark", hwm, "200000", 100, 100000000, NONE,
           "Messages a socket queues per peer before it blocks or drops."),
    F_BOOL (pcfg_t, "insecure", insecure, "false",
            "Without security, allow binding an address other machines can reach (tcp://*, a LAN address): plain text that anyone who reaches the port can read and use to make the bot post; logged as a warning at start."),
    F_SECTION ("security", s_security_schema,
               "CurveZMQ encryption of every connection, and allow-lists of the keys each role may connect with (README: Workers on other machines)."),
};
static const pcfg_schema_t s_network_schema = SCHEMA ("network", pcfg_t, s_network_fields);

static const pcfg_field_t s_storage_fields[] = {
    F_STR (pcfg_t, "dataDir", data_dir, "\"parley-data\"", NULL, "PARLEY_DATA_DIR",
           "Directory of the durable state (a journal directory per daemon: broker/, poller/, sink/), relative to the working directory; empty keeps state in memory only, and a restart forgets it."),
    F_STR (pcfg_t, "fsync", fsync, "\"always\"", "always|batch|off", "PARLEY_FSYNC",
           "always: every acknowledged hand-off survives power loss; batch: survives a process crash, power loss may lose the last moments; off: fastest, a crash of the machine may lose recent work."),
    F_INT (pcfg_t, "dedupeRetentionSeconds", dedupe_retention_s, "86400", 60, MAX_I, NONE,
           "How long finished and posted (message, entity) keys are kept to refuse a repeat."),
    F_INT (pcfg_t, "dedupeMaxKeys", dedupe_max_keys, "1000000", 1000, 1000000000, NONE,
           "At most this many such keys per daemon (the oldest go first; 48 to 64 bytes each in memory)."),
};
static const pcfg_schema_t s_storage_schema = SCHEMA ("storage", pcfg_t, s_storage_fields);

static const pcfg_field_t s_poller_fields[] = {
    F_ARR (pcfg_t, "sources", sources, "[{\"name\":\"demo\",\"type\":\"demo\"}]", s_source_schema,
           "Where chat messages come from; several may run at once."),
    F_INT (pcfg_t, "seed", poller_seed, "0", 0, MAX_I, "PARLEY_SEED",
           "Seed of the responseChance draw; the draw for a (message, entity) is the same on every run."),
    F_INT (pcfg_t, "submitBatch", submit_batch, "256", 1, 1024, NONE,
           "Jobs sent to the broker in one frame at most."),
    F_INT (pcfg_t, "submitWindow", submit_window, "20000", 1, 10000000, NONE,
           "Jobs submitted but not yet acknowledged at most; reading pauses beyond it."),
};
static const pcfg_schema_t s_poller_schema = SCHEMA ("poller", pcfg_t, s_poller_fields);

static const pcfg_field_t s_worker_fields[] = {
    F_STR (pcfg_t, "id", worker_id, "\"\"", NULL, "WORKER_ID",
           "Worker name in logs and stats; empty means host name and process id."),
    F_STR (pcfg_t, "backend", worker_backend, "\"template\"", "template|openai", "PARLEY_BACKEND",
           "template: built-in persona templates (no LLM); openai: the lmStudioServers."),
    F_INT (pcfg_t, "concurrency", worker_concurrency, "64", 1, 100000, "PARLEY_CONCURRENCY",
           "Jobs one worker process holds at once (its credits)."),
    F_INT (pcfg_t, "templateLatencyMs", template_latency_ms, "300", 0, 600000, NONE,
           "template: simulated time to write a reply."),
    F_INT (pcfg_t, "templateJitterMs", template_jitter_ms, "200", 0, 600000, NONE,
           "template: random extra latency, 0..this."),
    F_STR (pcfg_t, "templateCrashOn", template_crash_on, "\"\"", NULL, NONE,
           "Fault injection for tests: the template backend kills its worker (abort) on a message containing this text; empty disables."),
    F_INT (pcfg_t, "requestTimeoutMs", request_timeout_ms, "20000", 100, 3600000, NONE,
           "Total time one LLM call may take."),
    F_INT (pcfg_t, "connectTimeoutMs", connect_timeout_ms, "3000", 10, 600000, NONE,
           "Time to connect to an LLM server."),
    F_INT (pcfg_t, "retries", llm_retries, "2", 0, 100, NONE,
           "Retries of a failed LLM call (on another server when there is one) before the job goes back to the broker."),
    F_INT (pcfg_t, "drainTimeoutMs", drain_timeout_ms, "30000", 0, 3600000, NONE,
           "On SIGTERM, time to finish jobs in hand before the rest go back to the broker."),
    F_BOOL (pcfg_t, "stream", llm_stream, "false",
            "Ask LLM servers to stream replies (server-sent events), which measures the time to first token."),
    F_INT (pcfg_t, "healthCheckMs", health_check_ms, "10000", 0, 3600000, NONE,
           "Interval of each LLM server's health check and model listing; 0 disables them."),
    F_INT (pcfg_t, "breakerFailures", breaker_failures, "5", 1, 100000, NONE,
           "Consecutive failed calls (5xx, timeouts, refused or reset connections) that open a server's circuit: it gets no calls for breakerOpenMs."),
    F_INT (pcfg_t, "breakerOpenMs", breaker_open_ms, "10000", 10, 3600000, NONE,
           "How long an open circuit keeps a server out before one trial call is let through."),
    F_INT (pcfg_t, "backoffMs", backoff_ms, "1000", 0, 3600000, NONE,
           "First pause of a server that answered 429 or 503 without Retry-After; doubles with each further one."),
    F_INT (pcfg_t, "backoffMaxMs", backoff_max_ms, "30000", 0, 3600000, NONE,
           "Longest pause of a busy server, also the cap on its Retry-After."),
    F_INT (pcfg_t, "maxCapacity", worker_max_capacity, "4096", 1, 1000000, NONE,
           "The broker gives no worker more jobs at once than this, whatever capacity it announces."),
};
static const pcfg_schema_t s_worker_schema = SCHEMA ("worker", pcfg_t, s_worker_fields);

static const pcfg_field_t s_sink_fields[] = {
    F_ARR (pcfg_t, "destinations", destinations, "[{\"name\":\"console\",\"type\":\"stdout\"}]",
           s_dest_schema, "Where replies are posted."),
    F_INT (pcfg_t, "statsIntervalMs", stats_interval_ms, "1000", 50, 3600000, NONE,
           "Interval of the published stats snapshots."),
    F_INT (pcfg_t, "statsLogIntervalMs", stats_log_interval_ms, "5000", 0, 3600000, NONE,
           "Interval of the one-line stats summary in the sink's log; 0 disables it."),
};
static const pcfg_schema_t s_sink_schema = SCHEMA ("sink", pcfg_t, s_sink_fields);

static const pcfg_field_t s_root_fields[] = {
    F_SECTION ("botSettings", s_bot_schema, "Limits of the whole pipeline."),
    F_SECTION ("queueSettings", s_queue_schema, "How the broker queues, leases and retries jobs."),
    F_ARR (pcfg_t, "entities", entities, "[]", s_entity_schema, "The personas that answer."),
    F_ARR (pcfg_t, "lmStudioServers", llm_servers, "[]", s_llm_schema,
           "OpenAI-compatible LLM servers the workers call."),
    F_ARR (pcfg_t, "chatLimits", chat_limits, "[]", s_chat_limit_schema,
           "Per-chat limits; the first rule matching a chat's source and kind applies."),
    F_SECTION ("network", s_network_schema, "Endpoints and transport settings."),
    F_SECTION ("storage", s_storage_schema, "Durable state."),
    F_SECTION ("poller", s_poller_schema, "The poller: sources and submission."),
    F_SECTION ("worker", s_worker_schema, "The workers: backend and concurrency."),
    F_SECTION ("sink", s_sink_schema, "The sink: destinations and stats."),
    F_STR (pcfg_t, "logLevel", log_level, "\"info\"", "error|warn|info|debug|trace",
           "PARLEY_LOG_LEVEL", "Least severe log level written."),
    F_IGNORE ("featureFlags", "Accepted for compatibility; not used."),
    F_IGNORE ("routerSettings", "Accepted for compatibility; not used."),
    F_IGNORE ("monitoring", "Accepted for compatibility; the stats feed replaces it."),
    F_IGNORE ("clusterSettings", "Accepted for compatibility; not used."),
    F_IGNORE ("globalSettings", "Accepted for compatibility; not used."),
};
const pcfg_schema_t pcfg_root_schema = SCHEMA ("", pcfg_t, s_root_fields);
