/*  poller_store - the poller's durable state. See poller_store.h. */
#include "poller/poller_store.h"
#include "common/palloc.h"
#include "store/pstore.h"

#include <stdlib.h>
#include <string.h>

static const char *s_schema =
    "CREATE TABLE IF NOT EXISTS seen (msg_key TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS seen_at ON seen (at);"
    "CREATE TABLE IF NOT EXISTS cursors (source TEXT PRIMARY KEY, cursor TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS outbox ("
    "  seq INTEGER PRIMARY KEY, frame BLOB NOT NULL, count INTEGER NOT NULL);";

enum { S_SEEN_GET, S_SEEN_SET, S_CURSOR_SET, S_CURSOR_GET, S_BATCH, S_ACKED, S_PRUNE };

struct poller_store_s {
    pstore_t *db;
};

poller_store_t *poller_store_open (const char *dir, const char *fsync, char *err, size_t errlen)
{
    pstore_t *db = pstore_open (dir, "poller", fsync, s_schema, err, errlen);
    if (!db)
        return NULL;
    poller_store_t *self = pcalloc (1, sizeof *self);
    self->db = db;
    return self;
}

void poller_store_close (poller_store_t **self_p)
{
    poller_store_t *self = *self_p;
    if (!self)
        return;
    pstore_close (&self->db);
    free (self);
    *self_p = NULL;
}

int poller_store_commit (poller_store_t *self)
{
    return pstore_commit (self->db);
}

bool poller_store_seen (poller_store_t *self, const char *msg_key)
{
    sqlite3_stmt *st = pstore_stmt (self->db, S_SEEN_GET, "SELECT 1 FROM seen WHERE msg_key = ?");
    sqlite3_bind_text (st, 1, msg_key, -1, SQLITE_STATIC);
    return pstore_step (self->db, st) == SQLITE_ROW;
}

void poller_store_mark_seen (poller_store_t *self, const char *msg_key, int64_t now)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (self->db, S_SEEN_SET, "INSERT OR IGNORE INTO seen VALUES (?, ?)");
    sqlite3_bind_text (st, 1, msg_key, -1, SQLITE_STATIC);
    sqlite3_bind_int64 (st, 2, now);
    pstore_step (self->db, st);
}

void poller_store_cursor (poller_store_t *self, const char *source, const char *cursor)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (self->db, S_CURSOR_SET,
                                    "INSERT INTO cursors VALUES (?, ?)"
                                    " ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor");
    sqlite3_bind_text (st, 1, source, -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 2, cursor, -1, SQLITE_STATIC);
    pstore_step (self->db, st);
}

char *poller_store_get_cursor (poller_store_t *self, const char *source)
{
    sqlite3_stmt *st = pstore_stmt (self->db, S_CURSOR_GET, "SELECT cursor FROM cursors WHERE source = ?");
    sqlite3_bind_text (st, 1, source, -1, SQLITE_STATIC);
    if (pstore_step (self->db, st) != SQLITE_ROW)
        return NULL;
    return pstrdup ((const char *) sqlite3_column_text (st, 0));
}

void poller_store_batch (poller_store_t *self, uint64_t seq, const void *frame, size_t size,
                         size_t count)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (self->db, S_BATCH, "INSERT OR REPLACE INTO outbox VALUES (?, ?, ?)");
    sqlite3_bind_int64 (st, 1, (int64_t) seq);
    sqlite3_bind_blob (st, 2, frame, (int) size, SQLITE_STATIC);
    sqlite3_bind_int64 (st, 3, (int64_t) count);
    pstore_step (self->db, st);
}

void poller_store_acked (poller_store_t *self, uint64_t seq)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (self->db, S_ACKED, "DELETE FROM outbox WHERE seq = ?");
    sqlite3_bind_int64 (st, 1, (int64_t) seq);
    pstore_step (self->db, st);
}

void poller_store_load_batches (poller_store_t *self, void *arg, poller_store_batch_fn *fn)
{
    sqlite3_stmt *st;
    sqlite3_prepare_v2 (pstore_db (self->db), "SELECT seq, frame, count FROM outbox ORDER BY seq", -1,
                        &st, NULL);
    while (sqlite3_step (st) == SQLITE_ROW)
        fn (arg, (uint64_t) sqlite3_column_int64 (st, 0), sqlite3_column_blob (st, 1),
            (size_t) sqlite3_column_bytes (st, 1), (size_t) sqlite3_column_int64 (st, 2));
    sqlite3_finalize (st);
}

void poller_store_load_seen (poller_store_t *self, void *arg, poller_store_seen_fn *fn)
{
    sqlite3_stmt *st;
    sqlite3_prepare_v2 (pstore_db (self->db), "SELECT msg_key, at FROM seen ORDER BY at", -1, &st,
                        NULL);
    while (sqlite3_step (st) == SQLITE_ROW)
        fn (arg, (const char *) sqlite3_column_text (st, 0), sqlite3_column_int64 (st, 1));
    sqlite3_finalize (st);
}

void poller_store_prune (poller_store_t *self, int64_t before)
{
    pstore_write (self->db);
    sqlite3_stmt *st = pstore_stmt (self->db, S_PRUNE, "DELETE FROM seen WHERE at < ?");
    sqlite3_bind_int64 (st, 1, before);
    pstore_step (self->db, st);
}
