/*  store - the broker's durable state. See store.h. */
#include "broker/store.h"
#include "store/pstore.h"
#include "common/palloc.h"
#include "common/plog.h"

#include <stdlib.h>
#include <string.h>

static const char *s_schema =
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS jobs ("
    "  id INTEGER PRIMARY KEY, entity TEXT NOT NULL, msg_key TEXT NOT NULL, chat TEXT NOT NULL,"
    "  chat_kind TEXT NOT NULL, priority INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
    "  enqueued_ms INTEGER NOT NULL, not_before INTEGER NOT NULL, expires_ms INTEGER NOT NULL,"
    "  attempt INTEGER NOT NULL, failures INTEGER NOT NULL, committed INTEGER NOT NULL,"
    "  token INTEGER NOT NULL, payload BLOB, history TEXT, crashes INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS done (dkey TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS done_at ON done (at);"
    "CREATE TABLE IF NOT EXISTS reservations ("
    "  job_id INTEGER NOT NULL, at INTEGER NOT NULL, entity TEXT NOT NULL, chat TEXT NOT NULL,"
    "  chat_kind TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS reservations_job ON reservations (job_id);"
    "CREATE INDEX IF NOT EXISTS reservations_at ON reservations (at);"
    "CREATE TABLE IF NOT EXISTS dead ("
    "  id INTEGER PRIMARY KEY, msg_key TEXT NOT NULL, entity TEXT NOT NULL, chat TEXT NOT NULL,"
    "  priority INTEGER NOT NULL, created_ms INTEGER NOT NULL, dead_at INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL, reason TEXT NOT NULL, history TEXT NOT NULL, payload BLOB,"
    "  chat_kind TEXT NOT NULL DEFAULT '', maybe_posted INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS paused (entity TEXT PRIMARY KEY);";

//  Statement slots.
enum {
    S_META_GET, S_META_SET, S_JOB_INSERT, S_JOB_UPDATE, S_JOB_DELETE, S_DONE_INSERT,
    S_DONE_DELETE, S_RESERVE, S_UNRESERVE, S_DEAD_INSERT, S_DEAD_DELETE, S_PAUSE, S_RESUME,
    S_PRUNE_DONE, S_PRUNE_RESERVATIONS
};

struct store_s {
    pstore_t *db;
    uint64_t last_job_id;
    uint64_t stored_job_id;     //  last_job_id as in the file
};

static int64_t s_meta_get (store_t *self, const char *key)
{
    sqlite3_stmt *st = pstore_stmt (self->db, S_META_GET, "SELECT value FROM meta WHERE key = ?");
    sqlite3_bind_text (st, 1, key, -1, SQLITE_STATIC);
    return pstore_step (self->db, st) == SQLITE_ROW ? sqlite3_column_int64 (st, 0) : 0;
}

static void s_meta_set (store_t *self, const char *key, int64_t value)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (self->db, S_META_SET,
                                    "INSERT INTO meta (key, value) VALUES (?, ?)"
                                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value");
    sqlite3_bind_text (st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64 (st, 2, value);
    pstore_step (self->db, st);
}

store_t *store_open (const char *dir, const char *fsync, char *err, size_t errlen)
{
    pstore_t *db = pstore_open (dir, "broker", fsync, s_schema, err, errlen);
    if (!db)
        return NULL;
    //  Files written before these columns existed get them (errors mean they exist).
    sqlite3_exec (pstore_db (db), "ALTER TABLE jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0", NULL, NULL, NULL);
    sqlite3_exec (pstore_db (db), "ALTER TABLE dead ADD COLUMN chat_kind TEXT NOT NULL DEFAULT ''", NULL, NULL, NULL);
    sqlite3_exec (pstore_db (db), "ALTER TABLE dead ADD COLUMN maybe_posted INTEGER NOT NULL DEFAULT 0", NULL, NULL, NULL);
    store_t *self = pcalloc (1, sizeof *self);
    self->db = db;
    self->last_job_id = self->stored_job_id = (uint64_t) s_meta_get (self, "last_job_id");
    return self;
}

void store_close (store_t **self_p)
{
    store_t *self = *self_p;
    if (!self)
        return;
    store_commit (self);
    pstore_close (&self->db);
    free (self);
    *self_p = NULL;
}

int store_commit (store_t *self)
{
    if (self->last_job_id != self->stored_job_id) {
        s_meta_set (self, "last_job_id", (int64_t) self->last_job_id);
        self->stored_job_id = self->last_job_id;
    }
    return pstore_commit (self->db);
}

uint32_t store_next_epoch (store_t *self)
{
    uint32_t epoch = (uint32_t) s_meta_get (self, "epoch") + 1;
    s_meta_set (self, "epoch", epoch);
    return epoch;
}

uint64_t store_last_job_id (store_t *self)
{
    return self->last_job_id;
}

void store_set_last_job_id (store_t *self, uint64_t id)
{
    self->last_job_id = id;
}

static void s_bind_job_state (sqlite3_stmt *st, const store_job_t *j, int first)
{
    sqlite3_bind_int64 (st, first, j->not_before);
    sqlite3_bind_int (st, first + 1, (int) j->attempt);
    sqlite3_bind_int (st, first + 2, (int) j->failures);
    sqlite3_bind_int (st, first + 3, j->committed);
    sqlite3_bind_int64 (st, first + 4, (int64_t) j->token);
    sqlite3_bind_text (st, first + 5, j->history, -1, SQLITE_STATIC);
    sqlite3_bind_int (st, first + 6, (int) j->crashes);
}

void store_job_insert (store_t *self, const store_job_t *j)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (
        self->db, S_JOB_INSERT,
        "INSERT INTO jobs (id, entity, msg_key, chat, chat_kind, priority, created_ms, enqueued_ms,"
        " expires_ms, payload, not_before, attempt, failures, committed, token, history, crashes)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    sqlite3_bind_int64 (st, 1, (int64_t) j->id);
    sqlite3_bind_text (st, 2, j->entity, -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 3, j->msg_key, -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 4, j->chat, -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 5, j->chat_kind, -1, SQLITE_STATIC);
    sqlite3_bind_int (st, 6, j->priority);
    sqlite3_bind_int64 (st, 7, j->created_ms);
    sqlite3_bind_int64 (st, 8, j->enqueued_ms);
    sqlite3_bind_int64 (st, 9, j->expires_ms);
    sqlite3_bind_blob (st, 10, j->payload, (int) j->payload_size, SQLITE_STATIC);
    s_bind_job_state (st, j, 11);
    pstore_step (self->db, st);
    if (j->id > self->last_job_id)
        self->last_job_id = j->id;
}

void store_job_update (store_t *self, const store_job_t *j)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (self->db, S_JOB_UPDATE,
                                    "UPDATE jobs SET not_before = ?, attempt = ?, failures = ?,"
                                    " committed = ?, token = ?, history = ?, crashes = ? WHERE id = ?");
    s_bind_job_state (st, j, 1);
    sqlite3_bind_int64 (st, 8, (int64_t) j->id);
    pstore_step (self->db, st);
}

void store_job_finish (store_t *self, uint64_t id, const char *dkey, int64_t now)
{
    pstore_write (self->db);
    sqlite3_stmt *st;
    if (id) {
        st = pstore_stmt (self->db, S_JOB_DELETE, "DELETE FROM jobs WHERE id = ?");
        sqlite3_bind_int64 (st, 1, (int64_t) id);
        pstore_step (self->db, st);
    }
    st = pstore_stmt (self->db, S_DONE_INSERT, "INSERT OR REPLACE INTO done (dkey, at) VALUES (?, ?)");
    sqlite3_bind_text (st, 1, dkey, -1, SQLITE_STATIC);
    sqlite3_bind_int64 (st, 2, now);
    pstore_step (self->db, st);
}

void store_forget_done (store_t *self, const char *dkey)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (self->db, S_DONE_DELETE, "DELETE FROM done WHERE dkey = ?");
    sqlite3_bind_text (st, 1, dkey, -1, SQLITE_STATIC);
    pstore_step (self->db, st);
}

void store_reserve (store_t *self, uint64_t job_id, int64_t at, const char *entity, const char *chat,
                    const char *chat_kind)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (self->db, S_RESERVE,
                                    "INSERT INTO reservations (job_id, at, entity, chat, chat_kind)"
                                    " VALUES (?, ?, ?, ?, ?)");
    sqlite3_bind_int64 (st, 1, (int64_t) job_id);
    sqlite3_bind_int64 (st, 2, at);
    sqlite3_bind_text (st, 3, entity, -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 4, chat, -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 5, chat_kind, -1, SQLITE_STATIC);
    pstore_step (self->db, st);
}

void store_unreserve (store_t *self, uint64_t job_id)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (self->db, S_UNRESERVE,
                                    "DELETE FROM reservations WHERE rowid = (SELECT max (rowid)"
                                    " FROM reservations WHERE job_id = ?)");
    sqlite3_bind_int64 (st, 1, (int64_t) job_id);
    pstore_step (self->db, st);
}

void store_dead_insert (store_t *self, const store_dead_t *d)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (
        self->db, S_DEAD_INSERT,
        "INSERT INTO dead (id, msg_key, entity, chat, priority, created_ms, dead_at, attempts,"
        " reason, history, payload, chat_kind, maybe_posted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    sqlite3_bind_int64 (st, 1, (int64_t) d->id);
    sqlite3_bind_text (st, 2, d->msg_key, -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 3, d->entity, -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 4, d->chat, -1, SQLITE_STATIC);
    sqlite3_bind_int (st, 5, d->priority);
    sqlite3_bind_int64 (st, 6, d->created_ms);
    sqlite3_bind_int64 (st, 7, d->dead_at);
    sqlite3_bind_int (st, 8, (int) d->attempts);
    sqlite3_bind_text (st, 9, d->reason, -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 10, d->history, -1, SQLITE_STATIC);
    sqlite3_bind_blob (st, 11, d->payload, (int) d->payload_size, SQLITE_STATIC);
    sqlite3_bind_text (st, 12, d->chat_kind ? d->chat_kind : "", -1, SQLITE_STATIC);
    sqlite3_bind_int (st, 13, d->maybe_posted);
    pstore_step (self->db, st);
}

void store_dead_delete (store_t *self, uint64_t id)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (self->db, S_DEAD_DELETE, "DELETE FROM dead WHERE id = ?");
    sqlite3_bind_int64 (st, 1, (int64_t) id);
    pstore_step (self->db, st);
}

void store_set_paused (store_t *self, const char *entity, bool paused)
{
    pstore_write (self->db);
    sqlite3_stmt *st = paused ? pstore_stmt (self->db, S_PAUSE, "INSERT OR IGNORE INTO paused VALUES (?)")
                              : pstore_stmt (self->db, S_RESUME, "DELETE FROM paused WHERE entity = ?");
    sqlite3_bind_text (st, 1, entity, -1, SQLITE_STATIC);
    pstore_step (self->db, st);
}

static const char *s_text (sqlite3_stmt *st, int col)
{
    const char *text = (const char *) sqlite3_column_text (st, col);
    return text ? text : "";
}

int store_load (store_t *self, int64_t now, int64_t retention_ms, const store_callbacks_t *fns,
                void *arg)
{
    sqlite3 *db = pstore_db (self->db);
    sqlite3_stmt *st;
    //  Jobs in the order they were first queued, so FIFO order survives.
    sqlite3_prepare_v2 (db,
                        "SELECT id, entity, msg_key, chat, chat_kind, priority, created_ms, enqueued_ms,"
                        " not_before, expires_ms, attempt, failures, committed, token, payload, history,"
                        " crashes FROM jobs ORDER BY enqueued_ms, id",
                        -1, &st, NULL);
    while (sqlite3_step (st) == SQLITE_ROW) {
        store_job_t j = {(uint64_t) sqlite3_column_int64 (st, 0),
                         s_text (st, 1),
                         s_text (st, 2),
                         s_text (st, 3),
                         s_text (st, 4),
                         sqlite3_column_int (st, 5),
                         sqlite3_column_int64 (st, 6),
                         sqlite3_column_int64 (st, 7),
                         sqlite3_column_int64 (st, 8),
                         sqlite3_column_int64 (st, 9),
                         (uint32_t) sqlite3_column_int (st, 10),
                         (uint32_t) sqlite3_column_int (st, 11),
                         (uint32_t) sqlite3_column_int (st, 16),
                         sqlite3_column_int (st, 12) != 0,
                         (uint64_t) sqlite3_column_int64 (st, 13),
                         sqlite3_column_blob (st, 14),
                         (uint32_t) sqlite3_column_bytes (st, 14),
                         s_text (st, 15)};
        if (j.id > self->last_job_id)
            self->last_job_id = j.id;
        fns->job (arg, &j);
    }
    sqlite3_finalize (st);
    sqlite3_prepare_v2 (db,
                        "SELECT id, msg_key, entity, chat, priority, created_ms, dead_at, attempts,"
                        " reason, history, payload, chat_kind, maybe_posted FROM dead ORDER BY id",
                        -1, &st, NULL);
    while (sqlite3_step (st) == SQLITE_ROW) {
        store_dead_t d = {(uint64_t) sqlite3_column_int64 (st, 0),
                          s_text (st, 1),
                          s_text (st, 2),
                          s_text (st, 3),
                          s_text (st, 11),
                          sqlite3_column_int (st, 4),
                          sqlite3_column_int (st, 12) != 0,
                          sqlite3_column_int64 (st, 5),
                          sqlite3_column_int64 (st, 6),
                          (uint32_t) sqlite3_column_int (st, 7),
                          s_text (st, 8),
                          s_text (st, 9),
                          sqlite3_column_blob (st, 10),
                          (uint32_t) sqlite3_column_bytes (st, 10)};
        fns->dead (arg, &d);
    }
    sqlite3_finalize (st);
    sqlite3_prepare_v2 (db, "SELECT dkey, at FROM done WHERE at > ? ORDER BY at", -1, &st, NULL);
    sqlite3_bind_int64 (st, 1, now - retention_ms);
    while (sqlite3_step (st) == SQLITE_ROW)
        fns->done (arg, s_text (st, 0), sqlite3_column_int64 (st, 1));
    sqlite3_finalize (st);
    sqlite3_prepare_v2 (db,
                        "SELECT at, entity, chat, chat_kind FROM reservations WHERE at > ? ORDER BY at",
                        -1, &st, NULL);
    sqlite3_bind_int64 (st, 1, now - 3600000);
    while (sqlite3_step (st) == SQLITE_ROW)
        fns->reservation (arg, sqlite3_column_int64 (st, 0), s_text (st, 1), s_text (st, 2),
                        s_text (st, 3));
    sqlite3_finalize (st);
    sqlite3_prepare_v2 (db, "SELECT entity FROM paused", -1, &st, NULL);
    while (sqlite3_step (st) == SQLITE_ROW)
        fns->paused (arg, s_text (st, 0));
    sqlite3_finalize (st);
    return 0;
}

void store_prune (store_t *self, int64_t now, int64_t retention_ms)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (self->db, S_PRUNE_RESERVATIONS,
                                    "DELETE FROM reservations WHERE at <= ?");
    sqlite3_bind_int64 (st, 1, now - 3600000);
    pstore_step (self->db, st);
    st = pstore_stmt (self->db, S_PRUNE_DONE, "DELETE FROM done WHERE at < ?");
    sqlite3_bind_int64 (st, 1, now - retention_ms);
    pstore_step (self->db, st);
}
