/*  sink_store - what only the sink knows, kept durably.

    The broker keeps every job under a lease and a fencing token, so the
    sink stores nothing about a result until it is about to post it: a
    result waiting for a verdict or for a rate slot is only in memory (if
    the sink dies, the broker takes the job back after the lease and
    dispatches it again under a new token). What the sink stores:

        mark    per reply being posted: its text, pair, chat, entity and
                token, stored and synced BEFORE the first byte leaves; later
                the time its first part was posted and its outcome; forgotten
                once the broker acknowledged the outcome
        posted  per pair posted (or in doubt: it may have been): its
                fingerprint, entity, chat and time; kept for dedupe
                (storage.dedupeRetentionSeconds / dedupeMaxKeys) and as the
                rate history a restart replays

    After a restart a mark without an outcome is a post that was
    interrupted: the sink asks the destination whether it went out.

    Writes are records appended to the turn and stored together by
    sink_store_commit: with fsync "always", a commit that holds a mark is
    synced to disk; the others ride along unsynced (losing them can only
    turn a post into one the sink asks the destination about again, never
    into a double post). Today the records land in SQLite (storage.dataDir/
    sink.db); the API is the shape of the append-only journal it moves to.
*/
#ifndef SINK_STORE_H_INCLUDED
#define SINK_STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pkey.h"

typedef struct sink_store_s sink_store_t;

#define SINK_NO_OUTCOME -1

//  A reply being posted. Strings and payload are borrowed (copied by the store).
typedef struct {
    pkey_fp_t pair;             //  fingerprint of (entity, msg_key)
    uint64_t job_id;
    uint64_t token;
    const char *msg_key;
    const char *entity;
    const char *chat;
    const char *chat_kind;
    const char *text;
    const void *payload;        //  the MESSAGE record: where to post
    uint32_t payload_size;
    int priority;
    int64_t created_ms;
    int64_t expires_ms;
    uint64_t llm_ms;
    uint64_t tokens;
    int64_t marked_at;
    int64_t first_at;           //  when its first part was posted; 0 = not known to be
    int outcome;                //  proto_outcome_status_t, or SINK_NO_OUTCOME
    const char *reason;
    int64_t outcome_at;
} sink_mark_t;

//  A pair posted, or in doubt.
typedef struct {
    pkey_fp_t pair;
    const char *entity;
    const char *chat;
    const char *chat_kind;
    int64_t at;                 //  when its first part was posted (or the doubt arose)
    bool doubt;                 //  it may or may not have been posted
} sink_posted_t;

//  NULL + err when the store cannot be opened.
sink_store_t *sink_store_open (const char *dir, const char *fsync, char *err, size_t errlen);
void sink_store_close (sink_store_t **self_p);

typedef void (sink_store_mark_fn) (void *arg, const sink_mark_t *mark);
typedef void (sink_store_posted_fn) (void *arg, const sink_posted_t *posted);
//  Calls `posted` for every posted pair, oldest first, then `mark` for
//  every mark.
void sink_store_load (sink_store_t *self, void *arg, sink_store_mark_fn *mark,
                      sink_store_posted_fn *posted);

//  A reply is about to be posted (synced at the next commit).
void sink_store_mark (sink_store_t *self, const sink_mark_t *mark);
//  A newer dispatch of the same job owns the reply being posted.
void sink_store_retoken (sink_store_t *self, pkey_fp_t pair, uint64_t job_id, uint64_t token);
//  Its first part was posted at `at`.
void sink_store_first (sink_store_t *self, pkey_fp_t pair, int64_t at);
//  Its outcome.
void sink_store_outcome (sink_store_t *self, pkey_fp_t pair, int outcome, const char *reason,
                         int64_t at);
//  Forgets a mark: the outcome was acknowledged, or the post certainly did not happen.
void sink_store_forget (sink_store_t *self, pkey_fp_t pair);

//  A pair was posted / is no longer remembered.
void sink_store_posted (sink_store_t *self, const sink_posted_t *posted);
void sink_store_unposted (sink_store_t *self, pkey_fp_t pair);
//  Forgets posted pairs older than `before`.
void sink_store_prune (sink_store_t *self, int64_t before);

//  Stores everything since the last commit. Returns 0, or -1 (logged) when
//  it could not: the error is sticky, nothing that waited may be sent.
int sink_store_commit (sink_store_t *self);
//  True when records wait for the next commit.
bool sink_store_dirty (sink_store_t *self);
//  Commits that were synced to disk (for tests and stats).
uint64_t sink_store_syncs (sink_store_t *self);

#endif
