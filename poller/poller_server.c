/*  poller_server - the poller actor. See poller.h. */
#include "poller/poller.h"
#include "poller/poller_store.h"
#include "poller/select.h"
#include "poller/source.h"
#include "common/pdaemon.h"
#include "common/plog.h"
#include "proto/proto.h"
#include "proto/proto_sock.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SEEN_MAX        200000  //  message keys remembered to drop repeats
#define CONTEXT_MAX     50      //  lines of context kept per chat
#define STATS_MS        1000
#define MAX_SOURCE_FDS  16
#define DRAIN_MS        5000    //  on stop, wait this long for outstanding ACKs

typedef struct {
    char *author;
    char *text;
} line_t;

typedef struct {
    line_t lines[CONTEXT_MAX];
    size_t count;
    size_t head;                //  next slot to write
} chat_context_t;

typedef struct {
    uint64_t seq;
    int64_t sent_at;
    size_t count;
    zmq_msg_t frame;            //  kept for resending
} batch_t;

typedef struct {
    uint64_t messages, duplicates, selected, unanswered, from_bots, jobs;
    uint64_t submitted, acked, accepted, broker_duplicates, rejected, resent;
} pcounters_t;

typedef struct {
    const pcfg_t *config;
    zsock_t *pipe;
    zsock_t *broker;
    proto_net_t net;
    source_t **sources;
    size_t source_count;
    char id[128];
    int64_t now;
    size_t context_size;        //  lines attached to each job
    zhashx_t *seen;             //  msg_key -> 1
    zlistx_t *seen_order;       //  oldest first
    zhashx_t *contexts;         //  chat key -> chat_context_t
    proto_job_spec_t *pending;  //  jobs not sent yet (strings and payload owned)
    size_t pending_count;
    size_t pending_capacity;
    zlistx_t *unsent;           //  batch_t made this iteration, sent once stored
    zlistx_t *unacked;          //  batch_t sent, oldest first
    size_t unacked_items;       //  jobs in unsent and unacked batches
    poller_store_t *store;      //  durable state; NULL keeps everything in memory
    int64_t next_prune;
    uint64_t next_seq;
    int64_t next_stats;
    pcounters_t counters;
    selection_t *selection;     //  scratch, one slot per entity
} poller_t;

//  --- seen set and context ------------------------------------------------------

//  The memory set is a cache of recent keys; the store has all of them.
static bool s_seen (poller_t *self, const char *key)
{
    return zhashx_lookup (self->seen, key) != NULL
           || (self->store && poller_store_seen (self->store, key));
}

static void s_mark_seen (poller_t *self, const char *key)
{
    if (self->store)
        poller_store_mark_seen (self->store, key, self->now);
    if (zhashx_insert (self->seen, key, (void *) 1) != 0)
        return;
    zlistx_add_end (self->seen_order, strdup (key));
    while (zlistx_size (self->seen_order) > SEEN_MAX) {
        char *oldest = zlistx_detach (self->seen_order, NULL);
        zhashx_delete (self->seen, oldest);
        free (oldest);
    }
}

static void s_context_free (void **item)
{
    chat_context_t *c = *item;
    for (size_t i = 0; i < c->count; i++) {
        free (c->lines[i].author);
        free (c->lines[i].text);
    }
    free (c);
    *item = NULL;
}

static chat_context_t *s_context (poller_t *self, const char *chat_key)
{
    chat_context_t *c = zhashx_lookup (self->contexts, chat_key);
    if (!c) {
        c = calloc (1, sizeof *c);
        zhashx_insert (self->contexts, chat_key, c);
    }
    return c;
}

static void s_context_add (chat_context_t *c, const char *author, const char *text)
{
    line_t *slot = &c->lines[c->head];
    if (c->count == CONTEXT_MAX) {
        free (slot->author);
        free (slot->text);
    }
    else
        c->count++;
    slot->author = strdup (author);
    slot->text = strdup (text);
    c->head = (c->head + 1) % CONTEXT_MAX;
}

//  --- making jobs -------------------------------------------------------------------

static void s_pending_add (poller_t *self, const proto_job_spec_t *spec)
{
    if (self->pending_count == self->pending_capacity) {
        self->pending_capacity = self->pending_capacity ? self->pending_capacity * 2 : 256;
        self->pending = realloc (self->pending, self->pending_capacity * sizeof (proto_job_spec_t));
    }
    self->pending[self->pending_count++] = *spec;
}

static void s_spec_free (proto_job_spec_t *spec)
{
    free ((char *) spec->msg_key);
    free ((char *) spec->entity);
    free ((char *) spec->chat);
    free ((char *) spec->chat_kind);
    free ((void *) spec->payload.data);
}

//  The source callback: one new chat message.
static bool s_on_message (void *ctx, source_t *source, const chat_msg_t *msg)
{
    poller_t *self = ctx;
    size_t room = (size_t) self->config->submit_window;
    size_t used = self->unacked_items + self->pending_count;
    if (used + self->config->entities.count > room)
        return false;   //  window full: the source keeps the message

    const char *name = source->config->name;
    char chat_key[600], msg_key[1200];
    snprintf (chat_key, sizeof chat_key, "%s/%s", name, msg->chat_ref);
    snprintf (msg_key, sizeof msg_key, "%s/%s", chat_key, msg->msg_ref);
    self->counters.messages++;
    if (s_seen (self, msg_key)) {
        self->counters.duplicates++;
        return true;
    }
    s_mark_seen (self, msg_key);
    chat_context_t *context = s_context (self, chat_key);
    int n = select_entities (self->config, name, msg, msg_key, (uint64_t) self->config->poller_seed,
                             self->selection);
    if (n == 0) {
        self->counters.unanswered++;
        //  Bots include our own entities: their replies come back through the sources.
        if (msg->from_bot || select_author_entity (self->config, msg) >= 0)
            self->counters.from_bots++;
    }
    else {
        self->counters.selected++;
        //  The chat's recent lines, oldest first, then this message.
        proto_line_t lines[CONTEXT_MAX];
        size_t take = context->count < self->context_size ? context->count : self->context_size;
        for (size_t i = 0; i < take; i++) {
            const line_t *l = &context->lines[(context->head + CONTEXT_MAX - take + i) % CONTEXT_MAX];
            lines[i] = (proto_line_t) {l->author, l->text};
        }
        uint64_t flags = msg->from_bot ? PROTO_MSG_FROM_BOT : 0;
        proto_message_t message = {name,         msg->chat_ref, msg->msg_ref,
                                   msg->author,  msg->author_id ? msg->author_id : "",
                                   msg->text,    (uint64_t) msg->ts_ms,
                                   flags,        lines,
                                   take};
        for (int i = 0; i < n; i++) {
            message.flags = flags | (self->selection[i].mention ? PROTO_MSG_MENTION : 0);
            uint8_t *payload;
            size_t size;
            if (proto_message_encode (&message, &payload, &size)) {
                plog_warn ("message %s could not be encoded (too large?); skipped", msg_key);
                source->errors++;
                break;
            }
            const pcfg_entity_t *e = pcfg_entity (self->config, (size_t) self->selection[i].entity);
            proto_job_spec_t spec = {strdup (msg_key),
                                     strdup (e->id),
                                     strdup (chat_key),
                                     strdup (msg->chat_kind ? msg->chat_kind : ""),
                                     (uint64_t) self->selection[i].priority,
                                     (uint64_t) msg->ts_ms,
                                     {payload, (uint32_t) size}};
            s_pending_add (self, &spec);
            self->counters.jobs++;
        }
    }
    s_context_add (context, msg->author, msg->text);
    return true;
}

//  --- submitting ---------------------------------------------------------------------

static void s_send_copy (poller_t *self, zmq_msg_t *frame)
{
    zmq_msg_t copy;
    zmq_msg_init (&copy);
    zmq_msg_copy (&copy, frame);
    if (zmq_msg_send (&copy, zsock_resolve (self->broker), ZMQ_DONTWAIT) == -1)
        zmq_msg_close (&copy);  //  not connected yet: the resend timer retries
}

static void s_flush (poller_t *self)
{
    size_t done = 0;
    while (done < self->pending_count) {
        size_t n = self->pending_count - done;
        if (n > (size_t) self->config->submit_batch)
            n = (size_t) self->config->submit_batch;
        batch_t *batch = calloc (1, sizeof *batch);
        batch->seq = ++self->next_seq;
        batch->count = n;
        batch->sent_at = self->now;
        proto_submit_t submit = {batch->seq, self->pending + done, n};
        if (proto_encode (PROTO_SUBMIT, &submit, &batch->frame)) {
            plog_error ("a batch of %zu jobs could not be encoded; dropped", n);
            free (batch);
        }
        else {
            //  Stored now, sent once the iteration's commit is done.
            if (self->store)
                poller_store_batch (self->store, batch->seq, zmq_msg_data (&batch->frame),
                                    zmq_msg_size (&batch->frame), n);
            zlistx_add_end (self->unsent, batch);
            self->unacked_items += n;
            self->counters.submitted += n;
        }
        for (size_t i = done; i < done + n; i++)
            s_spec_free (&self->pending[i]);
        done += n;
    }
    self->pending_count = 0;
}

//  Sends the batches made (and stored) this iteration.
static void s_send_new (poller_t *self)
{
    batch_t *batch;
    while ((batch = zlistx_detach (self->unsent, NULL))) {
        s_send_copy (self, &batch->frame);
        batch->sent_at = self->now;
        zlistx_add_end (self->unacked, batch);
    }
}

static void s_batch_free (void **item)
{
    batch_t *batch = *item;
    zmq_msg_close (&batch->frame);
    free (batch);
    *item = NULL;
}

static void s_on_ack (poller_t *self, const proto_ack_t *ack)
{
    for (batch_t *b = zlistx_first (self->unacked); b; b = zlistx_next (self->unacked)) {
        if (b->seq != ack->seq)
            continue;
        self->unacked_items -= b->count;
        self->counters.acked += b->count;
        self->counters.accepted += ack->accepted;
        self->counters.broker_duplicates += ack->duplicates;
        self->counters.rejected += ack->rejected_count;
        for (size_t i = 0; i < ack->rejected_count; i++)
            plog_warn ("broker refused job %" PRIu64 " of batch %" PRIu64 ": %s",
                       ack->rejected[i].index, ack->seq, ack->rejected[i].reason);
        if (self->store)
            poller_store_acked (self->store, b->seq);
        zlistx_delete (self->unacked, zlistx_cursor (self->unacked));
        return;
    }
    //  An ACK for a batch already acknowledged (its resend crossed the ACK).
}

static void s_resend (poller_t *self)
{
    //  Oldest first; a resent batch moves to the end, so the list stays in send order.
    size_t n = zlistx_size (self->unacked);
    batch_t *b;
    while (n-- > 0 && (b = zlistx_first (self->unacked))
           && self->now - b->sent_at >= self->config->resend_ms) {
        zlistx_detach_cur (self->unacked);
        s_send_copy (self, &b->frame);
        b->sent_at = self->now;
        self->counters.resent += b->count;
        plog_debug ("resent batch %" PRIu64 " (%zu jobs) without ACK", b->seq, b->count);
        zlistx_add_end (self->unacked, b);
    }
}

//  --- stats ---------------------------------------------------------------------------

static void s_send_stats (poller_t *self)
{
    uint64_t errors = 0, finished = 0;
    for (size_t i = 0; i < self->source_count; i++) {
        errors += self->sources[i]->errors;
        finished += self->sources[i]->finished (self->sources[i]);
    }
    const pcounters_t *c = &self->counters;
    proto_num_t values[] = {
        {"messages", (double) c->messages},     {"duplicates", (double) c->duplicates},
        {"selected", (double) c->selected},     {"unanswered", (double) c->unanswered},
        {"from_bots", (double) c->from_bots},   {"jobs", (double) c->jobs},
        {"submitted", (double) c->submitted},   {"acked", (double) c->acked},
        {"accepted", (double) c->accepted},     {"broker_duplicates", (double) c->broker_duplicates},
        {"rejected", (double) c->rejected},     {"resent", (double) c->resent},
        {"unacked", (double) self->unacked_items},
        {"source_errors", (double) errors},     {"sources", (double) self->source_count},
        {"sources_finished", (double) finished},
    };
    proto_component_t me = {"poller", self->id, values, sizeof values / sizeof values[0]};
    proto_stats_t stats = {(uint64_t) self->now, &me, 1};
    zmq_msg_t frame;
    if (proto_encode (PROTO_STATS, &stats, &frame) == 0
        && zmq_msg_send (&frame, zsock_resolve (self->broker), ZMQ_DONTWAIT) == -1)
        zmq_msg_close (&frame);
}

//  --- the loop --------------------------------------------------------------------------

static void s_read_broker (poller_t *self)
{
    for (int i = 0; i < 1000; i++) {
        zmq_msg_t frame;
        zmq_msg_init (&frame);
        if (zmq_msg_recv (&frame, zsock_resolve (self->broker), ZMQ_DONTWAIT) == -1) {
            zmq_msg_close (&frame);
            return;
        }
        proto_msg_t msg;
        char why[256];
        if (proto_decode (zmq_msg_data (&frame), zmq_msg_size (&frame), &msg, why, sizeof why))
            plog_warn ("dropped malformed frame from the broker: %s", why);
        else {
            if (msg.type == PROTO_ACK)
                s_on_ack (self, &msg.body.ack);
            proto_msg_release (&msg);
        }
        zmq_msg_close (&frame);
    }
}

static void s_poll_sources (poller_t *self, zmq_pollitem_t *items, int *owner, int nitems)
{
    for (size_t s = 0; s < self->source_count; s++) {
        source_t *src = self->sources[s];
        bool ready = src->wakeup (src, self->now) <= self->now;
        for (int i = 0; i < nitems; i++)
            if (owner[i] == (int) s && items[i].revents)   //  in, out (a connect) or error
                ready = true;
        if (!ready || src->finished (src))
            continue;
        size_t used = self->unacked_items + self->pending_count;
        size_t window = (size_t) self->config->submit_window;
        int budget = used >= window ? 0 : (int) (window - used);
        if (budget > 10000)
            budget = 10000;
        if (budget > 0) {
            src->poll (src, self->now, budget, s_on_message, self);
            const char *cursor = src->cursor (src);
            if (cursor && self->store)
                poller_store_cursor (self->store, src->config->name, cursor);
        }
    }
}

//  Tells each source its cursor is stored: it may now confirm what it read.
static void s_confirm_cursors (poller_t *self)
{
    for (size_t s = 0; s < self->source_count; s++) {
        source_t *src = self->sources[s];
        const char *cursor = src->cursor (src);
        if (cursor)
            src->committed (src, cursor);
    }
}

//  Returns -1 when the poller's state could not be stored.
static int s_run (poller_t *self)
{
    zmq_pollitem_t items[2 + MAX_SOURCE_FDS];
    int owner[2 + MAX_SOURCE_FDS];
    int64_t stop_at = 0;
    for (;;) {
        self->now = zclock_time ();
        int n = 0;
        items[n++] = (zmq_pollitem_t) {zsock_resolve (self->pipe), 0, ZMQ_POLLIN, 0};
        items[n++] = (zmq_pollitem_t) {zsock_resolve (self->broker), 0, ZMQ_POLLIN, 0};
        int64_t wake = self->next_stats;
        bool window_open = self->unacked_items + self->pending_count < (size_t) self->config->submit_window;
        for (size_t s = 0; s < self->source_count && !stop_at; s++) {
            source_t *src = self->sources[s];
            if (src->finished (src) || !window_open)
                continue;
            int k = src->pollitems (src, items + n, 2 + MAX_SOURCE_FDS - n);
            for (int i = 0; i < k; i++)
                owner[n + i] = (int) s;
            n += k;
            int64_t w = src->wakeup (src, self->now);
            if (w < wake)
                wake = w;
        }
        batch_t *oldest = zlistx_first (self->unacked);
        if (oldest && oldest->sent_at + self->config->resend_ms < wake)
            wake = oldest->sent_at + self->config->resend_ms;
        if (stop_at && stop_at < wake)
            wake = stop_at;
        int64_t timeout = wake - self->now;
        if (zmq_poll (items, n, timeout < 0 ? 0 : timeout > 60000 ? 60000 : (long) timeout) == -1) {
            if (zmq_errno () == EINTR)
                continue;   //  a signal: the pipe brings $TERM
            break;
        }
        self->now = zclock_time ();
        if (items[0].revents & ZMQ_POLLIN) {
            char *command = zstr_recv (self->pipe);
            bool term = !command || streq (command, "$TERM");
            zstr_free (&command);
            if (term && !stop_at) {
                //  Stop reading, but give outstanding batches a moment to be acknowledged.
                stop_at = self->now + DRAIN_MS;
                plog_info ("stopping: waiting up to %d ms for %zu unacknowledged jobs", DRAIN_MS,
                           self->unacked_items);
            }
        }
        s_read_broker (self);
        if (!stop_at)
            s_poll_sources (self, items + 2, owner + 2, n - 2);
        s_flush (self);
        //  Jobs, seen marks and cursors are stored before the broker or the
        //  platform hears of them.
        if (self->store && poller_store_commit (self->store))
            return -1;
        s_confirm_cursors (self);
        s_send_new (self);
        s_resend (self);
        if (self->store && self->now >= self->next_prune) {
            poller_store_prune (self->store, self->now, self->config->dedupe_retention_s * 1000);
            self->next_prune = self->now + 60000;
        }
        if (self->now >= self->next_stats) {
            s_send_stats (self);
            self->next_stats = self->now + STATS_MS;
        }
        //  With storage, unacknowledged batches are resent after a restart:
        //  no need to wait for them.
        if (stop_at && (self->unacked_items == 0 || self->now >= stop_at || self->store))
            break;
    }
    if (self->store && self->unacked_items)
        plog_info ("stopped with %zu jobs not yet acknowledged; stored, they go again at the next start",
                   self->unacked_items);
    else if (self->unacked_items)
        plog_warn ("stopped with %zu jobs not acknowledged by the broker", self->unacked_items);
    return 0;
}

//  --- life -------------------------------------------------------------------------------

static poller_t *s_poller_new (zsock_t *pipe, const pcfg_t *config)
{
    poller_t *self = calloc (1, sizeof *self);
    self->pipe = pipe;
    self->config = config;
    char host[64] = "host";
    gethostname (host, sizeof host - 1);
    snprintf (self->id, sizeof self->id, "%s/%d", host, (int) getpid ());
    proto_net_from_config (&self->net, config, "poller");
    self->seen = zhashx_new ();
    self->seen_order = zlistx_new ();
    zlistx_set_destructor (self->seen_order, (zlistx_destructor_fn *) zstr_free);
    self->contexts = zhashx_new ();
    zhashx_set_destructor (self->contexts, s_context_free);
    self->unacked = zlistx_new ();
    zlistx_set_destructor (self->unacked, s_batch_free);
    self->unsent = zlistx_new ();
    zlistx_set_destructor (self->unsent, s_batch_free);
    self->selection = calloc (config->entities.count + 1, sizeof (selection_t));
    for (size_t i = 0; i < config->entities.count; i++) {
        size_t k = (size_t) pcfg_entity (config, i)->messages_to_read;
        if (k > self->context_size)
            self->context_size = k > CONTEXT_MAX ? CONTEXT_MAX : k;
    }
    return self;
}

static void s_poller_destroy (poller_t **self_p)
{
    poller_t *self = *self_p;
    for (size_t i = 0; i < self->source_count; i++)
        source_destroy (&self->sources[i]);
    free (self->sources);
    for (size_t i = 0; i < self->pending_count; i++)
        s_spec_free (&self->pending[i]);
    free (self->pending);
    zhashx_destroy (&self->seen);
    zlistx_destroy (&self->seen_order);
    zhashx_destroy (&self->contexts);
    zlistx_destroy (&self->unacked);
    zlistx_destroy (&self->unsent);
    poller_store_close (&self->store);
    free (self->selection);
    zsock_destroy (&self->broker);
    free (self);
    *self_p = NULL;
}

//  A stored, unacknowledged batch: it goes again first thing.
static void s_load_batch (void *arg, uint64_t seq, const void *frame, size_t size, size_t count)
{
    poller_t *self = arg;
    batch_t *batch = calloc (1, sizeof *batch);
    batch->seq = seq;
    batch->count = count;
    zmq_msg_init_size (&batch->frame, size);
    memcpy (zmq_msg_data (&batch->frame), frame, size);
    zlistx_add_end (self->unsent, batch);
    self->unacked_items += count;
    if (seq > self->next_seq)
        self->next_seq = seq;
}

static int s_start (poller_t *self, const char *ready_file)
{
    const pcfg_t *c = self->config;
    if (*c->data_dir) {
        char err[600];
        self->store = poller_store_open (c->data_dir, c->fsync, err, sizeof err);
        if (!self->store) {
            plog_error ("%s", err);
            return -1;
        }
        poller_store_load_batches (self->store, self, s_load_batch);
        if (zlistx_size (self->unsent))
            plog_info ("%zu unacknowledged batch(es) (%zu jobs) from before the restart go again",
                       zlistx_size (self->unsent), self->unacked_items);
    }
    self->broker = proto_sock_new (&self->net, ZMQ_DEALER, c->broker_frontend, false, NULL, PROTO_PORT_FRONTEND);
    if (!self->broker)
        return -1;
    const pcfg_source_t *configs = c->sources.items;
    self->sources = calloc (c->sources.count + 1, sizeof (source_t *));
    for (size_t i = 0; i < c->sources.count; i++) {
        if (!configs[i].enabled)
            continue;
        source_t *src = source_new (&configs[i], c, (uint64_t) c->poller_seed + i);
        if (!src)
            return -1;
        self->sources[self->source_count++] = src;
        char *cursor = self->store ? poller_store_get_cursor (self->store, configs[i].name) : NULL;
        if (cursor) {
            src->restore (src, cursor);
            plog_info ("source %s (%s) resumes at %s", configs[i].name, configs[i].type, cursor);
            free (cursor);
        }
        else
            plog_info ("source %s (%s) ready", configs[i].name, configs[i].type);
    }
    if (self->source_count == 0)
        plog_warn ("no enabled sources: nothing to do");
    plog_info ("submitting to %s; %zu entities", c->broker_frontend, c->entities.count);
    json_t *ready = json_object ();
    json_object_set_new (ready, "broker", json_string (c->broker_frontend));
    pdaemon_write_ready (ready_file, ready);
    return 0;
}

void poller_server (zsock_t *pipe, void *args)
{
    poller_args_t *a = args;
    poller_t *self = s_poller_new (pipe, a->config);
    zsock_signal (pipe, 0);
    if (s_start (self, a->ready_file)) {
        zstr_send (pipe, "cannot start the poller");
        s_poller_destroy (&self);
        return;
    }
    if (s_run (self)) {
        zstr_send (pipe, "storage failed; stopping");
        s_poller_destroy (&self);
        return;
    }
    s_poller_destroy (&self);
}
