/*  sink_store - the sink's durable state, in SQLite (storage.dataDir/sink.db).

        outbox  every result the sink holds, until the broker has
                acknowledged its outcome: received (to commit), posting
                (marked just before it is sent), or reported (outcome known)
        posted  the (entity, message) pairs posted, or being posted, so a
                result is never posted twice, even across restarts

    A result is stored before the sink asks the broker about it; a post is
    marked "posting" and the mark stored before the post leaves; an outcome
    is stored before it is reported. So after a crash every result is in one
    known state, and a post interrupted by the crash is checked with the
    destination, or dead-lettered as "in doubt", never blindly repeated.
*/
#ifndef SINK_STORE_H_INCLUDED
#define SINK_STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sink_store_s sink_store_t;

typedef enum {
    SINK_ROW_RECEIVED = 1,      //  not posted yet (ask the broker again after a restart)
    SINK_ROW_POSTING = 2,       //  marked: a post may be on its way
    SINK_ROW_REPORTED = 3       //  the outcome is known
} sink_row_state_t;

typedef struct {
    const char *key;            //  "job_id:token"
    uint64_t job_id;
    uint64_t token;
    uint64_t attempt;
    const char *msg_key;
    const char *entity;
    const char *chat;
    int64_t created_ms;
    int64_t expires_ms;
    const char *text;
    const void *payload;
    uint32_t payload_size;
    uint64_t llm_ms;
    int state;                  //  sink_row_state_t
    int outcome;                //  proto_outcome_status_t, when reported
    const char *reason;
    int64_t outcome_at;
} sink_row_t;

sink_store_t *sink_store_open (const char *dir, const char *fsync, char *err, size_t errlen);
void sink_store_close (sink_store_t **self_p);
//  Ends the open transaction; -1 (logged) if anything could not be stored.
int sink_store_commit (sink_store_t *self);

void sink_store_received (sink_store_t *self, const sink_row_t *row);
void sink_store_delete (sink_store_t *self, const char *key);
//  Marks a post as leaving: the row is POSTING and its pair is "being posted".
void sink_store_mark (sink_store_t *self, const char *key, const char *pair, int64_t now);
//  The post certainly did not happen: drop the mark, the row waits again.
void sink_store_unmark (sink_store_t *self, const char *key, const char *pair);
//  What an outcome means for the pair's mark.
typedef enum {
    SINK_PAIR_KEEP,             //  leave it (in doubt; or posted earlier by another result)
    SINK_PAIR_POSTED,           //  posted for good
    SINK_PAIR_CLEAR             //  certainly not posted: drop a "being posted" mark
} sink_pair_t;

//  Stores the outcome of a result and updates its pair's mark.
void sink_store_outcome (sink_store_t *self, const char *key, const char *pair, sink_pair_t pair_do,
                         int outcome, const char *reason, int64_t at);

//  -1 never posted, 0 being posted (in doubt if no post is in flight), 1 posted.
int sink_store_posted (sink_store_t *self, const char *pair);

typedef void (sink_store_row_fn) (void *arg, const sink_row_t *row);
void sink_store_load (sink_store_t *self, void *arg, sink_store_row_fn *fn);

//  Forgets posted pairs older than `retention_ms`.
void sink_store_prune (sink_store_t *self, int64_t now, int64_t retention_ms);

#endif
