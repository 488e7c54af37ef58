/*  store - the broker's durable state, in SQLite (WAL mode).

    What is stored (storage.dataDir/broker.db):
        jobs            every job not yet finished: queued, in flight (which
                        return to the queue on restart) and committed (which
                        the sink owns; their token survives the restart)
        done            keys of finished (message, entity) pairs, so a
                        resubmission after a restart is still a duplicate
        reservations    recent dispatches of rate-limited subjects, so a
                        restart does not allow a burst
        dead            the dead-letter queue
        paused          paused entities
        meta            the run counter (epoch) and the last job id

    Writes are grouped: the first write of a loop iteration opens a
    transaction and store_commit () ends it, with fsync per storage.fsync.
    The broker sends no acknowledgement before that commit.
*/
#ifndef STORE_H_INCLUDED
#define STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct store_s store_t;

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
    bool committed;             //  the sink owns it
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

//  Opens (creating if needed) dir/broker.db. fsync: always | batch | off.
//  Returns NULL and writes why into err on failure.
store_t *store_open (const char *dir, const char *fsync, char *err, size_t errlen);
void store_close (store_t **self_p);

//  Ends the iteration's transaction. Returns 0, or -1 (logged) when the
//  state could not be made durable: the broker must then stop.
int store_commit (store_t *self);

//  A new run: returns the run counter, one more than last time.
uint32_t store_next_epoch (store_t *self);
uint64_t store_last_job_id (store_t *self);
void store_set_last_job_id (store_t *self, uint64_t id);

void store_job_insert (store_t *self, const store_job_t *job);
//  Updates what changes over a job's life: retry state or commitment.
void store_job_update (store_t *self, const store_job_t *job);
//  The job is finished (posted, expired, dropped, dead): forget it, remember its key.
//  (id 0: only remember the pair as done.)
void store_job_finish (store_t *self, uint64_t id, const char *pair, int64_t now);
void store_forget_done (store_t *self, const char *pair);

void store_reserve (store_t *self, uint64_t job_id, int64_t at, const char *entity, const char *chat,
                    const char *chat_kind);
void store_unreserve (store_t *self, uint64_t job_id);

void store_dead_insert (store_t *self, const store_dead_t *dead);
void store_dead_delete (store_t *self, uint64_t id);

void store_set_paused (store_t *self, const char *entity, bool paused);

//  Loading at start-up, each in the order it was stored.
typedef struct {
    void (*job) (void *arg, const store_job_t *job);
    void (*dead) (void *arg, const store_dead_t *dead);
    void (*done) (void *arg, const char *pair, int64_t at);    //  oldest first
    void (*reservation) (void *arg, int64_t at, const char *entity, const char *chat,
                         const char *chat_kind);
    void (*paused) (void *arg, const char *entity);
} store_callbacks_t;
//  Finished pairs newer than `retention_ms` are loaded. Returns 0 or -1.
int store_load (store_t *self, int64_t now, int64_t retention_ms, const store_callbacks_t *fns,
                void *arg);

//  Drops what no longer matters: reservations older than an hour, done keys
//  older than `retention_ms`. Call now and then.
void store_prune (store_t *self, int64_t now, int64_t retention_ms);

#endif
