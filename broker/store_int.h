/*  store_int - what the store's two files share: its records and its struct.

    store.c writes: the record tables, and every record the broker stores;
    store_load.c reads them back at start-up. Nothing outside the store
    includes this file.
*/
#ifndef BROKER_STORE_INT_H_INCLUDED
#define BROKER_STORE_INT_H_INCLUDED

#include "broker/store.h"
#include "proto/proto_record.h"

#define RESERVATION_MS   3600000    //  rate history a restart needs: an hour
#define ID_BLOCK         4096       //  job ids a restart skips (see store_commit)

enum {
    R_META = 1, R_JOB, R_JOB_GONE, R_DONE, R_FORGET, R_RESERVE, R_UNRESERVE, R_DEAD, R_DEAD_GONE,
    R_PAUSE
};

//  The store's own anchored records, besides its owner's jobs and dead letters.
enum { ANCHOR_META = 3, ANCHOR_PAUSE = 4 };

//  --- the on-disk forms (their tables are in store.c) ---------------------------------

typedef struct {
    uint64_t epoch;
    uint64_t last_job_id;
} rec_meta_t;

typedef struct {
    uint64_t id;
    const char *entity, *msg_key, *chat, *chat_kind;
    uint64_t priority, created_ms, enqueued_ms, not_before, expires_ms;
    uint64_t attempt, failures, crashes, committed, token;
    proto_bin_t payload;
    const char *history;
} rec_job_t;

typedef struct {
    uint64_t id;
} rec_id_t;

typedef struct {
    uint64_t hi, lo, at;
} rec_done_t;

typedef struct {
    uint64_t job_id, at;
    const char *entity, *chat, *chat_kind;
} rec_reserve_t;

typedef struct {
    uint64_t id;
    const char *msg_key, *entity, *chat, *chat_kind;
    uint64_t priority, maybe_posted, created_ms, dead_at, attempts;
    const char *reason, *history;
    proto_bin_t payload;
} rec_dead_t;

typedef struct {
    const char *entity;
    uint64_t paused;
} rec_pause_t;

extern const proto_record_t store__rec_meta, store__rec_job, store__rec_id, store__rec_done,
    store__rec_reserve, store__rec_dead, store__rec_pause;

//  --- the store ---------------------------------------------------------------------------

typedef struct {
    uint64_t job_id;
    int64_t at;
    uint64_t segment;           //  0 once released
    char *entity, *chat, *chat_kind;    //  only while loading
} store_resv_t;

typedef struct {
    char *entity;
    store_anchor_t anchor;
} store_pause_t;

struct store_s {
    pjournal_t *journal;
    msgpack_sbuffer buf;        //  reused for every record
    uint64_t epoch;
    uint64_t last_job_id;
    uint64_t stored_last_job_id;
    store_anchor_t meta;        //  the latest META record
    store_pause_t *pauses;      //  paused entities ("*" = all)
    size_t pause_count, pause_capacity;
    uint64_t retagged;          //  the segment whose finished pairs were last copied forward
    store_resv_t *resv;         //  reservations of the last hour, oldest first
    size_t resv_head, resv_count, resv_capacity;
    store_rewrite_fn *rewrite;
    void *owner;
    pseen_t *done;
    uint64_t quarantined;
};

//  store.c
//  The entry of `entity` in the pause list, made if it has none.
store_pause_t *store__pause_entry (store_t *self, const char *entity);
//  A reservation at `at`, newest, holding a reference to its segment.
void store__resv_push (store_t *self, uint64_t job_id, int64_t at, uint64_t segment);

#endif
