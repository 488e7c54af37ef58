/*  intake - chat messages to jobs. See intake.h. */
#include "poller/intake.h"
#include "poller/context.h"
#include "poller/select.h"
#include "poller/spec.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "common/pseen.h"

#include <string.h>

#define LOG_BURST 20            //  invalid-message warnings a minute

struct intake_s {
    const pcfg_t *config;
    prt_t *rt;                  //  the clock
    submit_t *submit;
    poller_store_t *store;      //  NULL keeps the seen set in memory only
    select_t *select;
    selection_t *selection;     //  scratch, one slot per entity
    context_t *context;
    pseen_t *seen;              //  fingerprints of message keys (tags: the store's segments)
    size_t refused_need;        //  jobs of the last message refused for want of room
    char *keys;                 //  scratch: chat key and message key
    size_t keys_capacity;
    intake_counters_t counters;
    plog_limiter_t log;
};

intake_t *intake_new (const pcfg_t *config, prt_t *rt, submit_t *submit, poller_store_t *store)
{
    intake_t *self = pcalloc (1, sizeof *self);
    self->config = config;
    self->rt = rt;
    self->submit = submit;
    self->store = store;
    self->select = select_new (config);
    self->selection = pcalloc (config->entities.count + 1, sizeof (selection_t));
    size_t lines = 0;
    for (size_t i = 0; i < config->entities.count; i++) {
        size_t k = (size_t) pcfg_entity (config, i)->messages_to_read;
        if (k > lines)
            lines = k;
    }
    self->context = context_new (lines);
    self->seen = pseen_new ((size_t) config->dedupe_max_keys, config->dedupe_retention_s * 1000);
    if (store)
        poller_store_set_seen (store, self->seen);     //  filled by poller_store_load
    return self;
}

void intake_destroy (intake_t **self_p)
{
    intake_t *self = *self_p;
    if (!self)
        return;
    select_destroy (&self->select);
    free (self->selection);
    context_destroy (&self->context);
    pseen_destroy (&self->seen);
    free (self->keys);
    free (self);
    *self_p = NULL;
}

void intake_prune (intake_t *self, int64_t now)
{
    assert (self);
    //  Forgotten keys free their records' segments (the store's callback).
    pseen_prune (self->seen, now);
}

size_t intake_refused_need (intake_t *self)
{
    assert (self);
    return self->refused_need;
}

size_t intake_seen (intake_t *self)
{
    assert (self);
    return pseen_size (self->seen);
}

const intake_counters_t *intake_counters (intake_t *self)
{
    assert (self);
    return &self->counters;
}

//  The MESSAGE record of a job, with as much of the chat's context as fits
//  in a payload (the oldest lines go first). Returns 0, or -1 if even
//  without context it does not fit.
static int s_payload (proto_message_t *message, proto_bin_t *out)
{
    for (;;) {
        uint8_t *data;
        size_t size;
        if (proto_message_encode (message, &data, &size))
            return -1;
        if (size <= PROTO_MAX_STR) {
            *out = (proto_bin_t) {data, (uint32_t) size};
            return 0;
        }
        free (data);
        if (message->context_count == 0)
            return -1;
        size_t keep = message->context_count / 2;
        message->context += message->context_count - keep;
        message->context_count = keep;
    }
}

static void s_invalid (intake_t *self, const char *msg_key, int jobs, const char *why)
{
    self->counters.invalid += (uint64_t) jobs;
    if (plog_limiter_allow (&self->log, LOG_BURST))
        plog_warn ("message %.200s: %s; its %d job(s) not submitted", msg_key, why, jobs);
}

//  One job per selected entity, each with the payload of its kind (the
//  mention flag differs).
static void s_make_jobs (intake_t *self, const chat_msg_t *msg, proto_message_t *message,
                         const char *chat_key, const char *msg_key, int n)
{
    proto_line_t lines[CONTEXT_MAX];
    message->context = lines;
    message->context_count = context_get (self->context, chat_key, lines);
    proto_bin_t payload[2] = {{NULL, 0}, {NULL, 0}};    //  plain, mention
    uint64_t flags = message->flags;
    for (int i = 0; i < n; i++) {
        const selection_t *sel = &self->selection[i];
        proto_bin_t *p = &payload[sel->mention ? 1 : 0];
        if (!p->data) {
            message->flags = flags | (sel->mention ? PROTO_MSG_MENTION : 0);
            if (s_payload (message, p)) {
                s_invalid (self, msg_key, n - i, "too large for a job payload");
                break;
            }
        }
        const pcfg_entity_t *e = pcfg_entity (self->config, (size_t) sel->entity);
        proto_job_spec_t spec = {pstrdup (msg_key),
                                 pstrdup (e->id),
                                 pstrdup (chat_key),
                                 pstrdup (msg->chat_kind ? msg->chat_kind : ""),
                                 (uint64_t) sel->priority,
                                 (uint64_t) msg->ts_ms,
                                 {pmemdup (p->data, p->size), p->size}};
        if (submit_add (self->submit, &spec) == 0)
            self->counters.jobs++;
    }
    free ((void *) payload[0].data);
    free ((void *) payload[1].data);
}

bool intake_message (void *ctx, source_t *source, const chat_msg_t *msg)
{
    intake_t *self = ctx;
    const char *name = source->config->name;
    size_t name_len = strlen (name), chat_len = strlen (msg->chat_ref);
    size_t chat_size = name_len + 1 + chat_len + 1;
    size_t key_size = chat_size + strlen (msg->msg_ref) + 1;
    self->keys = pgrow (self->keys, &self->keys_capacity, chat_size + key_size, 1);
    char *chat_key = self->keys, *msg_key = self->keys + chat_size;
    snprintf (chat_key, chat_size, "%s/%s", name, msg->chat_ref);
    snprintf (msg_key, key_size, "%s/%s/%s", name, msg->chat_ref, msg->msg_ref);

    pkey_fp_t fp = pkey_fp (msg_key, key_size - 1);
    if (pseen_has (self->seen, fp)) {
        self->counters.messages++;
        self->counters.duplicates++;
        return true;
    }
    int skipped = 0;
    int n = select_run (self->select, source->config, chat_key, msg, msg_key,
                        (uint64_t) self->config->poller_seed, self->selection, &skipped);
    if (n > 0 && (size_t) n > submit_room (self->submit) && submit_outstanding (self->submit) > 0) {
        self->refused_need = (size_t) n;
        return false;   //  the window is full: the source keeps the message
    }

    int64_t now = prt_now (self->rt);
    self->counters.messages++;
    pseen_add (self->seen, fp, now, self->store ? poller_store_mark_seen (self->store, fp, now) : 0);
    self->counters.skipped += (uint64_t) skipped;
    proto_message_t message = {name,
                               msg->chat_ref,
                               msg->msg_ref,
                               msg->author,
                               msg->author_id ? msg->author_id : "",
                               msg->text,
                               (uint64_t) msg->ts_ms,
                               msg->from_bot ? PROTO_MSG_FROM_BOT : 0,
                               NULL,
                               0};
    char why[200];
    const char *problem = spec_message_check (&message, why, sizeof why);
    if (n > 0) {
        self->counters.selected++;
        if (problem)
            s_invalid (self, msg_key, n, problem);
        else
            s_make_jobs (self, msg, &message, chat_key, msg_key, n);
    }
    else if (skipped == 0) {
        self->counters.unanswered++;
        //  Bots include our own entities: their replies come back through the sources.
        if (msg->from_bot || select_who (self->select, msg->author) >= 0)
            self->counters.from_bots++;
    }
    if (!problem)
        context_add (self->context, chat_key, msg->author, msg->text);
    return true;
}
