/*  store - the broker's durable state: a journal of records (store/pjournal).

    What is stored (storage.dataDir/broker/):
        JOB         every unfinished job, whole, each time it changes in a way
                    a restart must know: accepted, committed to the sink (with
                    its token), queued again after a failure (attempts,
                    failures, crashes, history). In flight is not stored: a
                    restart queues it again anyway.
        JOB_GONE    the job finished (its older records are void)
        DONE        the fingerprint of a finished (entity, message) pair, so a
                    resubmission after a restart is still a duplicate
        RESERVE /   recent dispatches of rate-limited subjects and their
        UNRESERVE   release, so a restart does not allow a burst
        DEAD, DEAD_GONE   the dead-letter queue
        PAUSE       paused entities
        META        the run counter (epoch) and the last job id

    Every record is coded by the protocol's table-driven codec, so loading
    checks it as strictly as the network does; a record that cannot be used
    is quarantined (kept in quarantine.pj, counted, logged with its key) and
    the broker starts anyway.

    Only accepted jobs must be on disk before an acknowledgement (an ACK):
    store_job_put with `sync`. Everything else rides along with the next
    sync: losing it in a power cut can only cause a deduplicated repeat.

    Objects that are stored whole (jobs, dead letters) embed a store_anchor_t:
    it ties the object to the segment of its latest record, so old segments
    can be deleted, and lets the store ask the owner to write an object again
    when an old segment must be emptied (migration).
*/
#ifndef STORE_H_INCLUDED
#define STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/pkey.h"
#include "common/pseen.h"
#include "store/pjournal.h"

typedef struct store_s store_t;

typedef enum { STORE_ANCHOR_JOB = 1, STORE_ANCHOR_DEAD } store_anchor_kind_t;

typedef struct {
    pjournal_anchor_t journal;
    uint8_t kind;               //  store_anchor_kind_t
} store_anchor_t;

//  A job as stored.
typedef struct {
    uint64_t id;
    const char *entity;
    const char *msg_key;
    const char *chat;
    const char *chat_kind;
    int priority;
    int64_t created_ms;
    int64_t enqueued_ms;
    int64_t not_before;
    int64_t expires_ms;
    uint32_t attempt;
    uint32_t failures;
    uint32_t crashes;           //  workers lost while holding it
    bool committed;             //  the sink holds it
    uint64_t token;             //  when committed: the owning dispatch
    const void *payload;
    uint32_t payload_size;
    const char *history;
} store_job_t;

typedef struct {
    uint64_t id;
    const char *msg_key;
    const char *entity;
    const char *chat;
    const char *chat_kind;
    int priority;
    bool maybe_posted;
    int64_t created_ms;
    int64_t dead_at;
    uint32_t attempts;
    const char *reason;
    const char *history;
    const void *payload;
    uint32_t payload_size;
} store_dead_t;

//  Opens (creating it) dir/broker/. fsync: always | batch | off. Returns NULL
//  and writes why into err on failure.
store_t *store_open (const char *dir, const char *fsync, char *err, size_t errlen);
//  The same with segments of segment_bytes (0: the journal's default); for tests.
store_t *store_open_sized (const char *dir, const char *fsync, size_t segment_bytes, char *err,
                           size_t errlen);
void store_close (store_t **self_p);

//  The owner writes an object again when asked (migration): it calls
//  store_job_put or store_dead_put for the object holding `anchor`.
typedef void (store_rewrite_fn) (void *arg, store_anchor_t *anchor);
//  The set of finished pairs (owned by the job table; the store keeps each
//  key's segment in its tag). Both must be set before store_load.
void store_set_owner (store_t *self, store_rewrite_fn *rewrite, void *arg, pseen_t *done);

//  Ends the turn: empties an old segment when it is time (migration), then
//  writes and syncs per the policy. Returns 0, or -1 (logged) when the
//  state could not be made durable: the broker must then stop.
int store_commit (store_t *self);

//  A new run: returns the run counter, one more than last time.
uint32_t store_next_epoch (store_t *self);
uint64_t store_last_job_id (store_t *self);
void store_set_last_job_id (store_t *self, uint64_t id);

//  Stores a job whole (new, or changed). `sync`: an acknowledgement depends on it.
void store_job_put (store_t *self, store_anchor_t *anchor, const store_job_t *job, bool sync);
//  The job finished.
void store_job_gone (store_t *self, store_anchor_t *anchor, uint64_t id);

//  A finished pair: returns the tag to keep with it in the done set.
uint32_t store_done (store_t *self, pkey_fp_t fp, int64_t at);
//  A finished pair forgotten on purpose (a dead letter retried); `tag` from the set.
void store_forget_done (store_t *self, pkey_fp_t fp, uint32_t tag);

void store_reserve (store_t *self, uint64_t job_id, int64_t at, const char *entity, const char *chat,
                    const char *chat_kind);
void store_unreserve (store_t *self, uint64_t job_id);

void store_dead_put (store_t *self, store_anchor_t *anchor, const store_dead_t *dead);
void store_dead_gone (store_t *self, store_anchor_t *anchor, uint64_t id);

void store_set_paused (store_t *self, const char *entity, bool paused);

//  Loading at start-up: records in the order they were written. A job or
//  dead letter may come several times (each a newer version; the owner
//  keeps the last) and then be gone. The owner anchors what it keeps with
//  store_anchor_loaded. Reservations come last, oldest first, only the
//  last hour's and only those not released.
typedef struct {
    void (*job) (void *arg, const store_job_t *job, uint64_t segment);
    void (*job_gone) (void *arg, uint64_t id);
    void (*dead) (void *arg, const store_dead_t *dead, uint64_t segment);
    void (*dead_gone) (void *arg, uint64_t id);
    void (*reservation) (void *arg, int64_t at, const char *entity, const char *chat,
                         const char *chat_kind);
    void (*paused) (void *arg, const char *entity, bool paused);
} store_callbacks_t;
//  Finished pairs newer than `retention_ms` go into the done set. Returns 0
//  or -1 (the journal cannot be read at all).
int store_load (store_t *self, int64_t now, int64_t retention_ms, const store_callbacks_t *fns,
                void *arg);
void store_anchor_loaded (store_t *self, store_anchor_t *anchor, store_anchor_kind_t kind,
                          uint64_t segment);
//  An object dropped at load (a newer record said it is gone).
void store_anchor_drop (store_t *self, store_anchor_t *anchor);

//  Records quarantined at load (damaged, or from an unknown version).
uint64_t store_quarantined (store_t *self);

//  Drops what no longer matters: reservations older than an hour (done keys
//  age out of the done set itself). Call now and then.
void store_prune (store_t *self, int64_t now);

#endif
