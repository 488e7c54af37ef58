/*  sink_store_int - what the sink store's two files share: its records,
    its struct and the helpers both use.

    sink_store.c keeps the store as the sink runs: marks flagged and written
    at the commit, posted pairs, migration out of old segments.
    sink_store_load.c reads the journal back after a restart. Nothing
    outside the sink store includes this file.
*/
#ifndef SINK_SINK_STORE_INT_H_INCLUDED
#define SINK_SINK_STORE_INT_H_INCLUDED

#include "sink/sink_store.h"
#include "common/ptable.h"
#include "proto/proto_record.h"
#include "store/pjournal.h"

#define RATE_HISTORY_MS  3600000    //  the longest limit window: what a restart replays

enum { R_MARK = 1, R_OUTCOME, R_FORGET, R_POSTED, R_DOUBTED };

//  --- record tables (the on-disk forms) ---------------------------------------------

typedef struct {
    uint64_t hi, lo;            //  the pair
    uint64_t job_id, token;
    const char *msg_key, *entity, *chat, *chat_kind, *text;
    proto_bin_t payload;
    uint64_t priority, created_ms, expires_ms, llm_ms, tokens, marked_at, first_at;
} rec_mark_t;

typedef struct {
    uint64_t hi, lo;
    uint64_t job_id, token;
    const char *entity, *chat, *chat_kind;
    uint64_t marked_at, first_at, outcome;
    const char *reason;
    uint64_t outcome_at;
} rec_outcome_t;

typedef struct {
    uint64_t hi, lo;
} rec_pair_t;

typedef struct {
    uint64_t hi, lo, at;
    const char *entity, *chat, *chat_kind;     //  "" in a copy made by migration
} rec_posted_t;

//  sink_store.c: the tables the records are coded by.
extern const proto_record_t sink_store__mark_record;
extern const proto_record_t sink_store__outcome_record;
extern const proto_record_t sink_store__pair_record;
extern const proto_record_t sink_store__posted_record;

//  --- the store ---------------------------------------------------------------------------

typedef struct {
    pkey_fp_t pair;
    uint64_t job_id, token;
    char *strings;              //  one block: msg_key, entity, chat, chat_kind, text
    const char *msg_key, *entity, *chat, *chat_kind, *text;
    uint8_t *payload;
    uint32_t payload_size;
    int priority;
    int64_t created_ms, expires_ms;
    uint64_t llm_ms, tokens;
    int64_t marked_at, first_at;
    int outcome;                //  SINK_NO_OUTCOME until known
    char *reason;
    int64_t outcome_at;
    pjournal_anchor_t anchor;   //  the segment of its latest record
    bool flagged;               //  in the list the commit writes
    bool gone;                  //  forgotten: a tombstone, then freed
    bool sync;                  //  new: the commit that writes it is synced
    uint64_t order;             //  at load: the order its latest record came in
} sink_store_mark_t;

//  A segment kept for the rate history it holds: until an hour after its latest post.
typedef struct {
    uint64_t segment;
    int64_t last_at;
} sink_store_pin_t;

struct sink_store_s {
    pjournal_t *journal;
    msgpack_sbuffer buf;        //  reused for every record
    ptable_t *marks;            //  pair -> sink_store_mark_t
    sink_store_mark_t **flagged;         //  marks the next commit writes, in the order they changed
    size_t flagged_count, flagged_capacity;
    bool appended;              //  records wait in the journal's turn
    pseen_t *posted, *doubted;  //  the ledger's sets; tags are segments
    sink_store_pin_t *pins;              //  by segment, ascending
    size_t pin_count, pin_capacity;
    uint64_t retagged;          //  the last segment whose pairs were copied forward
    bool failed;                //  a record could not be written: nothing may go
    uint64_t quarantined;
};

//  sink_store.c
sink_store_mark_t *sink_store__mark_find (sink_store_t *self, pkey_fp_t pair);
//  The pair's mark, made (with no outcome) if it has none.
sink_store_mark_t *sink_store__mark_get (sink_store_t *self, pkey_fp_t pair);
void sink_store__mark_free (sink_store_t *self, sink_store_mark_t *m);
//  Copies the mark's strings into one block.
void sink_store__mark_strings (sink_store_mark_t *m, const char *msg_key, const char *entity,
                               const char *chat, const char *chat_kind, const char *text);
void sink_store__mark_payload (sink_store_mark_t *m, const void *payload, uint32_t size);
//  Keeps `segment` while it holds a post of the last hour.
void sink_store__pin (sink_store_t *self, uint64_t segment, int64_t at);

#endif
