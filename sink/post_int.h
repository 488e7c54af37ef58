/*  post_int - what the post module's two files share: a reply, the
    module's struct and the steps one calls in the other.

    post.c takes replies from the broker's verdict to a destination (the
    verdicts, the gate's releases, the mark, the send phase). post_outcome.c
    has what becomes of them there: what destinations say, retries, and the
    outcome the ledger gets. Nothing outside the post module includes this
    file.
*/
#ifndef SINK_POST_INT_H_INCLUDED
#define SINK_POST_INT_H_INCLUDED

#include "sink/post.h"
#include "common/pkey.h"
#include "common/plist.h"
#include "common/ptable.h"
#include "proto/proto.h"
#include "proto/proto_record.h"


typedef enum {
    R_GATED = 1,        //  in the gate: waiting for its budgets (or a retry's backoff)
    R_RELEASED,         //  a destination holds it; not marked yet
    R_MARKING,          //  its mark waits for the turn's commit
    R_READY,            //  marked: its destination may send it (local ones: in the send phase)
    R_POSTING,          //  its first byte may have left
    R_RESUMING          //  its first part went out, a later one failed: the rest waits
} r_state_t;

typedef struct {
    uint64_t id;                //  the gate's id for it
    uint64_t job_id, token;     //  adjacent: the by_ref key
    pkey_fp_t pair;
    char *block;                //  one allocation: the payload, then every string below
    const char *msg_key, *entity, *chat, *chat_kind, *text;
    const char *source, *chat_ref, *msg_ref, *author;     //  the payload's: where to post
    const uint8_t *payload;
    uint32_t payload_size;
    int priority;
    int entity_index;           //  in the configuration, or -1
    int64_t created_ms, expires_ms;
    uint64_t llm_ms, tokens;
    dest_t *dest;
    r_state_t state;
    bool marked;                //  its mark is stored (or being stored)
    bool durable;               //  ... and committed
    bool in_dest;               //  a destination holds it: its done will come
    bool lost;                  //  the broker no longer wants it from the sink
    int64_t marked_at;
    int64_t first_at;           //  its first part was posted then; 0 = not (known to be)
    uint32_t attempts;
    int64_t not_before;         //  R_RESUMING
    plist_t *list;              //  marking, local or resuming, if in one
    plist_node_t node;
} reply_t;

struct post_s {
    const pcfg_t *config;
    gate_t *gate;
    ledger_t *ledger;
    commit_t *commit;
    sink_store_t *store;
    dests_t *dests;
    ptable_t *by_id;            //  id -> reply_t (owns them)
    ptable_t *by_ref;           //  (job_id, token) -> reply_t
    ptable_t *by_pair;          //  pair fingerprint -> reply_t
    plist_t marking;            //  marks stored this turn, waiting for the commit
    plist_t local;              //  marked replies for local destinations, to write
    plist_t resuming;           //  partly posted replies waiting to send the rest
    msgpack_zone *zone;         //  decodes each payload, cleared before the next
    uint64_t next_id;
    int64_t now;
    bool draining;
    size_t in_dest;             //  replies destinations hold
    post_stats_t stats;
};

//  post.c
//  Wall time for events that come from destinations within a turn.
int64_t post__clock (post_t *self);
//  Moves the reply to `list` (NULL: to none).
void post__list (reply_t *r, plist_t *list);
void post__free (post_t *self, reply_t *r);
//  Stores the mark; it is synced by the turn's commit.
void post__mark (post_t *self, reply_t *r);

//  post_outcome.c
//  The outcome is known: the ledger reports it; the reply is done with.
void post__settle (post_t *self, reply_t *r, int outcome, const char *reason);
//  Dropped without an outcome: the broker no longer wants one from the sink.
void post__drop (post_t *self, reply_t *r);
//  Into the gate, to wait for its budgets; non-zero if it is too late for that.
int post__gate (post_t *self, reply_t *r, int64_t not_before, int64_t slot);
//  The destination events (dest_events_t).
int post__on_sending (void *ctx, void *tag, int64_t now);
void post__on_first (void *ctx, void *tag, int64_t at);
void post__on_done (void *ctx, void *tag, int status, const char *reason,
                    int64_t retry_after);

#endif
