/*  pconfig - the one configuration file every Parley process reads.

    The file has the shape of the seeds' config-aientities.json (botSettings,
    queueSettings, entities[], lmStudioServers[]) plus Parley's own sections
    (network, storage, poller, worker, sink). Each process reads the whole
    file and uses its part. The schema is a table (pconfig_schema.c): key,
    type, bounds, default, environment override and a sentence of
    documentation per setting; defaults, validation, the sample file and the
    README reference all come from that one table.

    Errors name the JSON path: "entities[3].rateLimits.maxPostsPerMinute:
    expected an integer, got a string". Unknown keys are warnings with their
    path (existing configs carry many application fields); --strict-config
    makes them errors. JSON may carry // line and slash-star block comments.
*/
#ifndef PCONFIG_H_INCLUDED
#define PCONFIG_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    char **items;
    size_t count;
} pcfg_strs_t;

typedef struct {
    void *items;
    size_t count;
} pcfg_arr_t;

typedef struct {
    double min_seconds_between_posts;   //  0 = no minimum gap
    int64_t max_posts_per_minute;       //  0 = unlimited
    int64_t max_posts_per_hour;         //  0 = unlimited
} pcfg_rate_t;

typedef struct {
    char *id;                    //  stable identifier ("philosopher")
    char *name;                  //  display name used in mentions; defaults to id
    pcfg_strs_t aliases;         //  other names that count as a mention
    bool enabled;                //  false = never selected
    double response_chance;      //  chance to answer an unaddressed message
    pcfg_rate_t rate;            //  rateLimits
    int64_t max_in_flight;       //  per-entity concurrency cap; 0 = queueSettings default
    int64_t max_age_seconds;     //  freshness; 0 = queueSettings.maxAgeSeconds
    char *system_prompt;         //  persona
    char *model;                 //  LLM model name
    double temperature;
    int64_t max_tokens;
    int64_t messages_to_read;    //  chat context size
    pcfg_strs_t stop;            //  stop sequences
    pcfg_strs_t templates;       //  replies of the template backend
    pcfg_strs_t allow_chats;     //  if non-empty, only these chats
    pcfg_strs_t deny_chats;      //  never these chats
    bool answer_bots;            //  may answer other bots' messages
    int64_t default_priority;    //  priority of its unaddressed replies; -1 = the source's
    int64_t mention_priority;    //  priority of its replies to mentions; -1 = the source's
} pcfg_entity_t;

typedef struct {
    char *name;
    char *url;                   //  base URL, e.g. http://10.0.0.102:1234
    char *ip;                    //  seed shape: ip + port instead of url
    int64_t port;
    bool enabled;
    int64_t weight;
    int64_t max_concurrent;
    pcfg_strs_t models;          //  models this server can serve
    char *api_key_env;           //  environment variable holding the API key
    char *api_key_file;          //  or a file holding it
    char *type;                  //  openai | llamacpp | lmstudio | ollama | vllm
    char *max_tokens_field;      //  auto | max_tokens | max_completion_tokens
} pcfg_llm_server_t;

typedef struct {
    char *source;                //  source name or "*"
    char *chat_kind;             //  "group" | "private" | "*"
    pcfg_rate_t rate;
} pcfg_chat_limit_t;

typedef struct {
    char *name;                  //  unique source name; prefixes chat keys
    char *type;                  //  demo | jsonl | http | telegram | twitch
    bool enabled;
    //  demo
    double rate_per_second;
    int64_t chats;
    int64_t users;
    double mention_rate;
    int64_t limit;               //  stop after this many messages; 0 = endless
    //  jsonl
    char *path;                  //  file, or "-" for stdin
    bool follow;
    //  http / telegram / twitch
    char *url;
    json_t *headers;
    char *token_env;
    int64_t polling_interval_ms;
    int64_t max_polling_interval_ms;  //  idle backoff cap; 0 = 4 x the interval
    int64_t page_size;           //  http: a page this long counts as full
    json_t *fields;              //  field mapping for the generic HTTP source
    char *default_chat;          //  http: chat of messages that name none
    char *chat_kind;             //  http: kind of its chats
    int64_t long_poll_seconds;   //  telegram
    int64_t timeout_ms;          //  one request
    int64_t max_response_bytes;
    pcfg_strs_t bot_authors;     //  authors whose messages count as a bot's
    pcfg_strs_t channels;
    char *nick;
    int64_t default_priority;    //  -1 = queueSettings.defaultPriority
    int64_t mention_priority;    //  -1 = queueSettings.mentionPriority
} pcfg_source_t;

typedef struct {
    char *entity;                //  entity id
    char *token_env;             //  its own bot token / OAuth token
    char *nick;                  //  twitch: its login
} pcfg_account_t;

typedef struct {
    char *scope;                 //  all | chat | group | private
    int64_t count;
    int64_t per_ms;
} pcfg_post_limit_t;

typedef struct {
    char *name;
    char *type;                  //  stdout | jsonl | http | telegram | twitch
    bool enabled;
    char *source;                //  replies to messages from this source; "*" = all
    char *path;                  //  jsonl
    char *url;
    json_t *headers;
    json_t *body;
    char *method;                //  http: POST | PUT
    char *token_env;
    char *nick;                  //  twitch: login of the default account
    pcfg_arr_t accounts;         //  pcfg_account_t: entities posting as themselves
    char *text_template;
    int64_t max_length;
    char *over_length;           //  split | trim
    bool platform_limits;
    bool moderator;              //  twitch: the bot is a moderator
    pcfg_arr_t limits;           //  pcfg_post_limit_t
    int64_t timeout_ms;
    double limit_margin_percent; //  platform windows are held this much longer...
    int64_t limit_margin_ms;     //  ...and at least this many ms longer
} pcfg_destination_t;

typedef struct {
    int64_t min_ms, max_ms;
} pcfg_delay_t;

typedef struct {
    //  botSettings
    int64_t polling_interval_ms;
    double min_seconds_between_any_post;
    int64_t max_total_messages_per_minute;
    int64_t max_total_messages_per_hour;

    //  queueSettings
    int64_t stale_claim_timeout_ms;
    int64_t max_retries;
    int64_t default_priority;
    int64_t mention_priority;
    int64_t congestion_threshold;
    int64_t max_queue_size;
    int64_t retry_base_ms;
    int64_t retry_max_ms;
    int64_t max_age_seconds;
    int64_t global_max_in_flight;
    int64_t entity_max_in_flight;
    int64_t aging_seconds;
    int64_t max_pending_results;
    int64_t max_hold_ms;         //  a job is taken back from its worker after this, whatever
    int64_t max_age_urgent_s;    //  maxAgeByClass: shorter freshness per class; 0 = maxAgeSeconds
    int64_t max_age_normal_s;
    int64_t max_age_low_s;
    int64_t urgent_below;        //  priorities below this use the urgent delay
    int64_t low_from;            //  priorities from this use the low delay
    pcfg_delay_t delay_urgent, delay_normal, delay_low;

    pcfg_arr_t entities;         //  pcfg_entity_t
    pcfg_arr_t llm_servers;      //  pcfg_llm_server_t
    pcfg_arr_t chat_limits;      //  pcfg_chat_limit_t

    //  network
    char *broker_frontend;
    char *broker_backend;
    char *sink_results;
    char *stats_publish;
    char *broker_frontend_bind;
    char *broker_backend_bind;
    char *sink_results_bind;
    char *stats_publish_bind;
    int64_t heartbeat_ms;
    int64_t max_frame_bytes;
    int64_t hwm;
    bool insecure;               //  allow plain TCP on non-loopback addresses
    bool security;               //  CurveZMQ on every TCP socket
    char *cert_path;             //  this process's certificate (secret part)
    char *broker_key;            //  the broker's public certificate (clients pin it)
    char *sink_key;              //  the sink's public certificate
    char *allow_dir;             //  allow-lists: pollers/ workers/ sinks/ operators/

    //  storage
    char *data_dir;
    char *fsync;
    int64_t dedupe_retention_s;
    int64_t dedupe_max_keys;

    //  poller
    pcfg_arr_t sources;          //  pcfg_source_t
    int64_t poller_seed;
    int64_t submit_batch;
    int64_t submit_window;
    int64_t resend_ms;

    //  worker
    char *worker_id;
    char *worker_backend;
    int64_t worker_concurrency;
    int64_t template_latency_ms;
    int64_t template_jitter_ms;
    char *template_crash_on;
    int64_t request_timeout_ms;
    int64_t connect_timeout_ms;
    int64_t llm_retries;
    int64_t drain_timeout_ms;
    bool llm_stream;             //  ask for server-sent events
    int64_t health_check_ms;     //  0 = no health checks
    int64_t breaker_failures;
    int64_t breaker_open_ms;
    int64_t backoff_ms;
    int64_t backoff_max_ms;
    int64_t worker_max_capacity; //  the broker grants no worker more slots than this

    //  sink
    pcfg_arr_t destinations;     //  pcfg_destination_t
    int64_t stats_interval_ms;
    int64_t stats_log_interval_ms;

    //  logging
    char *log_level;

    json_t *root;                //  the document as loaded (after defaults)
    struct ptable_s *entity_ids; //  pcfg_entity_t by id (pcfg_entity_index)
} pcfg_t;

//  Loads `path` (NULL = the embedded default) into a new config. On error,
//  returns NULL and writes a message naming the JSON path into `err`.
//  Warnings (unknown keys) are logged; with `strict` they are errors.
//  Caller owns the result.
pcfg_t *pcfg_load (const char *path, bool strict, char *err, size_t errlen);

//  Same, from a JSON text; `origin` names it in messages.
pcfg_t *pcfg_load_string (const char *text, const char *origin, bool strict, char *err,
                          size_t errlen);

//  The two halves of loading: text to JSON (comments stripped), and JSON to
//  a validated config (takes its own reference to `root`).
json_t *pcfg_parse_file (const char *path, char *err, size_t errlen);
json_t *pcfg_parse_string (const char *text, const char *origin, char *err, size_t errlen);
pcfg_t *pcfg_from_json (json_t *root, const char *origin, bool strict, char *err, size_t errlen);

void pcfg_destroy (pcfg_t **self_p);

//  Index of the entity with this id, or -1.
int pcfg_entity_index (const pcfg_t *self, const char *id);

static inline pcfg_entity_t *pcfg_entity (const pcfg_t *self, size_t index)
{
    return &((pcfg_entity_t *) self->entities.items)[index];
}

//  What kind of JSON value `v` is, for messages: "a string", "an integer",
//  "an object"...; "nothing" for NULL. Other readers of JSON (API pages,
//  LLM answers) use it too, so every "expected X, got Y" reads alike.
const char *pcfg_json_type (const json_t *v);

//  Things in a configuration that are valid but probably not what its author
//  meant (LLM servers listed while workers write templates; the demo source
//  or the stdout destination in effect because none is configured). `role`
//  ("poller", "worker", "sink", or NULL for all) picks those that concern
//  one daemon. Calls `fn` with each sentence; returns how many.
typedef void (pcfg_note_fn) (void *arg, const char *note);
size_t pcfg_notes (const pcfg_t *self, const char *role, pcfg_note_fn *fn, void *arg);

//  Writes the annotated sample configuration (every key at its default with
//  a sentence above it) to `out`.
void pcfg_write_sample (FILE *out);

//  Writes the configuration reference as Markdown tables to `out`.
void pcfg_write_reference (FILE *out);

//  The embedded default configuration (config/default.json).
extern const char pconfig_default_json[];

#endif
