/*  sink_store - the sink's durable state. See sink_store.h. */
#include "sink/sink_store.h"
#include "store/pstore.h"

#include <stdlib.h>

static const char *s_schema =
    "CREATE TABLE IF NOT EXISTS outbox ("
    "  key TEXT PRIMARY KEY, job_id INTEGER NOT NULL, token INTEGER NOT NULL,"
    "  attempt INTEGER NOT NULL, msg_key TEXT NOT NULL, entity TEXT NOT NULL, chat TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL, text TEXT NOT NULL,"
    "  payload BLOB, llm_ms INTEGER NOT NULL, state INTEGER NOT NULL, outcome INTEGER NOT NULL,"
    "  reason TEXT NOT NULL, outcome_at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS posted ("
    "  pair TEXT PRIMARY KEY, state INTEGER NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS posted_at ON posted (at);";

enum { S_INSERT, S_DELETE, S_STATE, S_MARK, S_UNMARK, S_OUTCOME, S_POSTED_SET, S_POSTED_GET, S_PRUNE };

struct sink_store_s {
    pstore_t *db;
};

sink_store_t *sink_store_open (const char *dir, const char *fsync, char *err, size_t errlen)
{
    pstore_t *db = pstore_open (dir, "sink", fsync, s_schema, err, errlen);
    if (!db)
        return NULL;
    sink_store_t *self = calloc (1, sizeof *self);
    self->db = db;
    return self;
}

void sink_store_close (sink_store_t **self_p)
{
    sink_store_t *self = *self_p;
    if (!self)
        return;
    pstore_close (&self->db);
    free (self);
    *self_p = NULL;
}

int sink_store_commit (sink_store_t *self)
{
    return pstore_commit (self->db);
}

void sink_store_received (sink_store_t *self, const sink_row_t *r)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (
        self->db, S_INSERT,
        "INSERT OR IGNORE INTO outbox (key, job_id, token, attempt, msg_key, entity, chat,"
        " created_ms, expires_ms, text, payload, llm_ms, state, outcome, reason, outcome_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 0, '', 0)");
    sqlite3_bind_text (st, 1, r->key, -1, SQLITE_STATIC);
    sqlite3_bind_int64 (st, 2, (int64_t) r->job_id);
    sqlite3_bind_int64 (st, 3, (int64_t) r->token);
    sqlite3_bind_int64 (st, 4, (int64_t) r->attempt);
    sqlite3_bind_text (st, 5, r->msg_key, -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 6, r->entity, -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 7, r->chat, -1, SQLITE_STATIC);
    sqlite3_bind_int64 (st, 8, r->created_ms);
    sqlite3_bind_int64 (st, 9, r->expires_ms);
    sqlite3_bind_text (st, 10, r->text, -1, SQLITE_STATIC);
    sqlite3_bind_blob (st, 11, r->payload, (int) r->payload_size, SQLITE_STATIC);
    sqlite3_bind_int64 (st, 12, (int64_t) r->llm_ms);
    pstore_step (self->db, st);
}

void sink_store_delete (sink_store_t *self, const char *key)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (self->db, S_DELETE, "DELETE FROM outbox WHERE key = ?");
    sqlite3_bind_text (st, 1, key, -1, SQLITE_STATIC);
    pstore_step (self->db, st);
}

static void s_set_state (sink_store_t *self, const char *key, int state)
{
    sqlite3_stmt *st = pstore_stmt (self->db, S_STATE, "UPDATE outbox SET state = ? WHERE key = ?");
    sqlite3_bind_int (st, 1, state);
    sqlite3_bind_text (st, 2, key, -1, SQLITE_STATIC);
    pstore_step (self->db, st);
}

static void s_set_posted (sink_store_t *self, const char *pair, int state, int64_t at)
{
    sqlite3_stmt *st = pstore_stmt (self->db, S_POSTED_SET,
                                    "INSERT INTO posted (pair, state, at) VALUES (?, ?, ?)"
                                    " ON CONFLICT (pair) DO UPDATE SET state = excluded.state,"
                                    " at = excluded.at");
    sqlite3_bind_text (st, 1, pair, -1, SQLITE_STATIC);
    sqlite3_bind_int (st, 2, state);
    sqlite3_bind_int64 (st, 3, at);
    pstore_step (self->db, st);
}

void sink_store_mark (sink_store_t *self, const char *key, const char *pair, int64_t now)
{
    pstore_write (self->db);
    s_set_state (self, key, SINK_ROW_POSTING);
    s_set_posted (self, pair, 0, now);
}

void sink_store_unmark (sink_store_t *self, const char *key, const char *pair)
{
    pstore_write (self->db);
    s_set_state (self, key, SINK_ROW_RECEIVED);
    sqlite3_stmt *st = pstore_stmt (self->db, S_UNMARK, "DELETE FROM posted WHERE pair = ? AND state = 0");
    sqlite3_bind_text (st, 1, pair, -1, SQLITE_STATIC);
    pstore_step (self->db, st);
}

void sink_store_outcome (sink_store_t *self, const char *key, const char *pair, sink_pair_t pair_do,
                         int outcome, const char *reason, int64_t at)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (self->db, S_OUTCOME,
                                    "UPDATE outbox SET state = 3, outcome = ?, reason = ?,"
                                    " outcome_at = ? WHERE key = ?");
    sqlite3_bind_int (st, 1, outcome);
    sqlite3_bind_text (st, 2, reason ? reason : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64 (st, 3, at);
    sqlite3_bind_text (st, 4, key, -1, SQLITE_STATIC);
    pstore_step (self->db, st);
    if (pair_do == SINK_PAIR_POSTED)
        s_set_posted (self, pair, 1, at);
    else if (pair_do == SINK_PAIR_CLEAR) {
        st = pstore_stmt (self->db, S_UNMARK, "DELETE FROM posted WHERE pair = ? AND state = 0");
        sqlite3_bind_text (st, 1, pair, -1, SQLITE_STATIC);
        pstore_step (self->db, st);
    }
}

int sink_store_posted (sink_store_t *self, const char *pair)
{
    sqlite3_stmt *st = pstore_stmt (self->db, S_POSTED_GET, "SELECT state FROM posted WHERE pair = ?");
    sqlite3_bind_text (st, 1, pair, -1, SQLITE_STATIC);
    return pstore_step (self->db, st) == SQLITE_ROW ? sqlite3_column_int (st, 0) : -1;
}

void sink_store_load (sink_store_t *self, void *arg, sink_store_row_fn *fn)
{
    sqlite3_stmt *st;
    sqlite3_prepare_v2 (pstore_db (self->db),
                        "SELECT key, job_id, token, attempt, msg_key, entity, chat, created_ms,"
                        " expires_ms, text, payload, llm_ms, state, outcome, reason, outcome_at"
                        " FROM outbox ORDER BY job_id",
                        -1, &st, NULL);
    while (sqlite3_step (st) == SQLITE_ROW) {
        sink_row_t r = {(const char *) sqlite3_column_text (st, 0),
                        (uint64_t) sqlite3_column_int64 (st, 1),
                        (uint64_t) sqlite3_column_int64 (st, 2),
                        (uint64_t) sqlite3_column_int64 (st, 3),
                        (const char *) sqlite3_column_text (st, 4),
                        (const char *) sqlite3_column_text (st, 5),
                        (const char *) sqlite3_column_text (st, 6),
                        sqlite3_column_int64 (st, 7),
                        sqlite3_column_int64 (st, 8),
                        (const char *) sqlite3_column_text (st, 9),
                        sqlite3_column_blob (st, 10),
                        (uint32_t) sqlite3_column_bytes (st, 10),
                        (uint64_t) sqlite3_column_int64 (st, 11),
                        sqlite3_column_int (st, 12),
                        sqlite3_column_int (st, 13),
                        (const char *) sqlite3_column_text (st, 14),
                        sqlite3_column_int64 (st, 15)};
        fn (arg, &r);
    }
    sqlite3_finalize (st);
}

void sink_store_prune (sink_store_t *self, int64_t now, int64_t retention_ms)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (self->db, S_PRUNE, "DELETE FROM posted WHERE state = 1 AND at < ?");
    sqlite3_bind_int64 (st, 1, now - retention_ms);
    pstore_step (self->db, st);
}
