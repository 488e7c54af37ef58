/*  dest_outbox - posts held until they may go. See dest_outbox.h. */
#include "sink/dest_outbox.h"
#include "common/palloc.h"
#include "common/pkey.h"
#include "common/plog.h"

#include <czmq.h>
#include <string.h>

#define PROGRESS_MAX 10000      //  partly posted replies remembered

struct dest_outbox_s {
    dest_t *dest;
    dest_send_fn *send;
    ptext_unit_t unit;
    size_t max_len;             //  per part; 0 = no limit
    bool trim;                  //  trim instead of split
    int64_t timeout_ms;         //  longest wait while the destination is not ready
    zlistx_t *items;            //  dest_item_t, most urgent first
    zhashx_t *busy;             //  chat -> in-flight count
    zhashx_t *progress;         //  reply key -> parts posted
    zlistx_t *progress_order;
    uint64_t next_seq;
    uint64_t pass;              //  passes over the items (dest_limit_protect)
};

static char *s_dup (const char *s)
{
    return pstrdup (s ? s : "");
}

static void s_item_free (dest_item_t *item)
{
    dest_post_t *p = &item->post;
    free ((char *) p->msg_key);
    free ((char *) p->entity_id);
    free ((char *) p->entity_name);
    free ((char *) p->chat);
    free ((char *) p->source);
    free ((char *) p->chat_ref);
    free ((char *) p->msg_ref);
    free ((char *) p->author);
    free ((char *) p->text);
    free (item->key);
    free (item->chat);
    free (item->msg_ref);
    for (size_t i = 0; i < item->part_count; i++)
        free (item->parts[i]);
    free (item->parts);
    free (item);
}

//  Most urgent first: priority, then the message's age, then arrival.
static int s_compare (const void *a, const void *b)
{
    const dest_item_t *x = a, *y = b;
    if (x->post.priority != y->post.priority)
        return x->post.priority < y->post.priority ? -1 : 1;
    if (x->post.created_ms != y->post.created_ms)
        return x->post.created_ms < y->post.created_ms ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void s_add_part (dest_item_t *item, const char *s, size_t n)
{
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t'))
        n--;
    item->parts = prealloc (item->parts, (item->part_count + 1) * sizeof (char *));
    item->parts[item->part_count++] = pstrndup (s, n);
}

static void s_split (dest_outbox_t *self, dest_item_t *item, const char *text)
{
    size_t len = strlen (text);
    if (!self->max_len || ptext_length (text, len, self->unit) <= self->max_len) {
        s_add_part (item, text, len);
        return;
    }
    if (self->trim) {
        char *trimmed = ptext_trim (text, self->max_len, self->unit);
        s_add_part (item, trimmed, strlen (trimmed));
        free (trimmed);
        return;
    }
    const char *at = text;
    while (*at) {
        while (*at == ' ' || *at == '\n' || *at == '\t')
            at++;
        size_t left = strlen (at);
        if (!left)
            break;
        size_t cut = ptext_cut (at, left, self->max_len, self->unit, true);
        if (cut == 0) {
            //  One character wider than the limit: send it alone rather than loop.
            cut = 1;
            while (cut < left && ((unsigned char) at[cut] & 0xC0) == 0x80)
                cut++;
        }
        s_add_part (item, at, cut);
        at += cut;
    }
    if (item->part_count == 0)
        s_add_part (item, "", 0);
}

static void s_busy (dest_outbox_t *self, const char *chat, int delta)
{
    intptr_t n = (intptr_t) zhashx_lookup (self->busy, chat) + delta;
    if (n > 0)
        zhashx_update (self->busy, chat, (void *) n);
    else
        zhashx_delete (self->busy, chat);
}

static void s_remember (dest_outbox_t *self, const char *key, size_t parts)
{
    if (!zhashx_lookup (self->progress, key)) {
        zlistx_add_end (self->progress_order, pstrdup (key));
        while (zlistx_size (self->progress_order) > PROGRESS_MAX) {
            char *oldest = zlistx_detach (self->progress_order, NULL);
            zhashx_delete (self->progress, oldest);
            free (oldest);
        }
    }
    zhashx_update (self->progress, key, (void *) (uintptr_t) parts);
}

static void s_complete (dest_outbox_t *self, dest_item_t *item, int status, const char *reason,
                        int64_t retry_after_ms)
{
    char why[600];
    if (reason && item->part_count > 1)
        snprintf (why, sizeof why, "part %zu of %zu: %s", item->part_next + 1, item->part_count,
                  reason);
    else
        snprintf (why, sizeof why, "%s", reason ? reason : "");
    //  Every platform's reason passes here on its way into an OUTCOME frame.
    dest_reason_utf8 (why);
    if (status == DEST_RETRY && item->part_next > 0)
        s_remember (self, item->key, item->part_next);
    else
        zhashx_delete (self->progress, item->key);
    zlistx_detach (self->items, item->handle);
    void *tag = item->tag;
    s_item_free (item);
    self->dest->done (self->dest->ctx, tag, status, reason ? why : NULL, retry_after_ms);
}

dest_item_t *dest_outbox_add (dest_outbox_t *self, const dest_post_t *post, void *tag,
                              const char *text, const char *chat, bool is_private,
                              void *account, dest_limit_t *limit)
{
    assert (self);
    dest_item_t *item = pcalloc (1, sizeof *item);
    item->tag = tag;
    item->key = pkey_pair_new (post->entity_id, post->msg_key);
    item->chat = pstrdup (chat);
    item->msg_ref = pstrdup (post->msg_ref ? post->msg_ref : "");
    item->is_private = is_private;
    item->seq = ++self->next_seq;
    item->post = *post;
    dest_post_t *p = &item->post;
    p->msg_key = s_dup (post->msg_key);
    p->entity_id = s_dup (post->entity_id);
    p->entity_name = s_dup (post->entity_name);
    p->chat = s_dup (post->chat);
    p->source = s_dup (post->source);
    p->chat_ref = s_dup (post->chat_ref);
    p->msg_ref = s_dup (post->msg_ref);
    p->author = s_dup (post->author);
    p->text = s_dup (post->text);
    item->account = account;
    item->limit = limit;
    s_split (self, item, text);
    item->part_next = (size_t) (uintptr_t) zhashx_lookup (self->progress, item->key);
    item->handle = zlistx_insert (self->items, item, true);
    if (item->part_next >= item->part_count) {
        plog_info ("destination %s: reply to %s was posted in full before; not again",
                   self->dest->config->name, post->msg_key);
        s_complete (self, item, DEST_OK, NULL, 0);
        return NULL;
    }
    if (item->part_next) {
        //  Its first part went out before: the sink knows it is being posted.
        item->announced = true;
        plog_info ("destination %s: reply to %s continues at part %zu of %zu",
                   self->dest->config->name, post->msg_key, item->part_next + 1, item->part_count);
    }
    return item;
}

void dest_outbox_run (dest_outbox_t *self, int64_t now)
{
    assert (self);
    size_t n = zlistx_size (self->items);
    if (!n)
        return;
    uint64_t pass = ++self->pass;
    //  A snapshot: completing an item removes it from the list (only that one).
    dest_item_t **items = pcalloc (n, sizeof *items);
    size_t k = 0;
    for (dest_item_t *item = zlistx_first (self->items); item; item = zlistx_next (self->items))
        items[k++] = item;
    for (size_t i = 0; i < k; i++) {
        dest_item_t *item = items[i];
        if (item->in_flight)
            continue;
        char *chat = item->chat;
        bool priv = item->is_private;
        dest_limit_t *limit = item->limit;
        //  Waiting for the chat's post in flight: it could go the moment
        //  that is answered, so less urgent posts must not take its windows.
        if (zhashx_lookup (self->busy, chat)) {
            dest_limit_protect (limit, pass, chat, priv, now);
            continue;
        }
        int64_t at = dest_limit_next (limit, chat, priv, now);
        if (at > now) {
            dest_limit_protect (limit, pass, chat, priv, at);
            continue;
        }
        if (dest_limit_protected (limit, pass, chat, priv, now)) {
            dest_limit_protect (limit, pass, chat, priv, now);
            continue;
        }
        if (!item->announced && self->dest->sending) {
            int answer = self->dest->sending (self->dest->ctx, item->tag, now);
            if (answer == DEST_SEND_DROP) {
                s_complete (self, item, DEST_DROPPED, NULL, 0);
                continue;
            }
            if (answer != DEST_SEND_GO) {
                //  The sink is storing its mark: keep its place.
                dest_limit_protect (limit, pass, chat, priv, now);
                continue;
            }
        }
        item->announced = true;
        char why[300] = "not ready";
        int rc = self->send (self->dest, item, now, why, sizeof why);
        if (rc == 0) {
            dest_limit_start (item->limit, chat, priv);
            item->in_flight = true;
            item->blocked_since = 0;
            s_busy (self, chat, 1);
        }
        else if (rc == 2)
            s_complete (self, item, DEST_FAIL, why, 0);
        else if (!item->blocked_since)
            item->blocked_since = now;
        else if (now - item->blocked_since >= self->timeout_ms) {
            char reason[400];
            snprintf (reason, sizeof reason, "could not post for %lld ms: %s",
                      (long long) (now - item->blocked_since), why);
            s_complete (self, item, DEST_RETRY, reason, 0);
        }
    }
    free (items);
}

int64_t dest_outbox_wakeup (dest_outbox_t *self, int64_t now)
{
    assert (self);
    int64_t wake = DEST_NEVER;
    for (dest_item_t *item = zlistx_first (self->items); item; item = zlistx_next (self->items)) {
        if (item->in_flight || zhashx_lookup (self->busy, item->chat))
            continue;
        int64_t at = item->blocked_since ? item->blocked_since + self->timeout_ms
                                         : dest_limit_next (item->limit, item->chat,
                                                            item->is_private, now);
        if (at < wake)
            wake = at;
    }
    return wake;
}

void dest_outbox_part_done (dest_outbox_t *self, dest_item_t *item, int status,
                            const char *reason, int64_t retry_after_ms, int64_t now)
{
    assert (self);
    if (item->in_flight) {
        item->in_flight = false;
        s_busy (self, item->chat, -1);
        //  The platform counted it when it took it: at the answer, at the latest.
        dest_limit_end (item->limit, item->chat, item->is_private, now,
                        status == DEST_OK || status == DEST_IN_DOUBT);
    }
    if (status == DEST_OK && item->part_next == 0 && self->dest->first)
        self->dest->first (self->dest->ctx, item->tag, now);
    if (status == DEST_OK && ++item->part_next < item->part_count) {
        s_remember (self, item->key, item->part_next);
        return;     //  the next part goes when the limits allow
    }
    s_complete (self, item, status, reason, retry_after_ms);
}

size_t dest_outbox_size (dest_outbox_t *self)
{
    assert (self);
    return zlistx_size (self->items);
}

dest_item_t *dest_outbox_first (dest_outbox_t *self)
{
    assert (self);
    return zlistx_first (self->items);
}

dest_item_t *dest_outbox_next (dest_outbox_t *self)
{
    assert (self);
    return zlistx_next (self->items);
}

dest_outbox_t *dest_outbox_new (dest_t *dest, dest_send_fn *send, ptext_unit_t unit,
                                size_t platform_max)
{
    dest_outbox_t *self = pcalloc (1, sizeof *self);
    self->dest = dest;
    dest->holds = true;
    self->send = send;
    self->unit = unit;
    self->max_len = dest->config->max_length > 0 ? (size_t) dest->config->max_length : platform_max;
    self->trim = strcmp (dest->config->over_length, "trim") == 0;
    self->timeout_ms = dest->config->timeout_ms;
    self->items = zlistx_new ();
    zlistx_set_comparator (self->items, s_compare);
    self->busy = zhashx_new ();
    self->progress = zhashx_new ();
    self->progress_order = zlistx_new ();
    zlistx_set_destructor (self->progress_order, (zlistx_destructor_fn *) zstr_free);
    return self;
}

void dest_outbox_destroy (dest_outbox_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dest_outbox_t *self = *self_p;
    for (dest_item_t *item = zlistx_first (self->items); item; item = zlistx_next (self->items))
        s_item_free (item);
    zlistx_destroy (&self->items);
    zhashx_destroy (&self->busy);
    zhashx_destroy (&self->progress);
    zlistx_destroy (&self->progress_order);
    free (self);
    *self_p = NULL;
}
