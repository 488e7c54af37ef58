/*  sink_store - the sink's durable state. See sink_store.h.

    Records wait in memory until sink_store_commit, which writes them in one
    SQLite transaction; SQLite's synchronous level cannot change inside a
    transaction, so it is chosen when the commit starts: FULL (the WAL is
    synced) when a mark is among the records and fsync is "always", NORMAL
    (no sync; safe against a crash of the process) otherwise.
*/
#include "sink/sink_store.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "store/pstore.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

static const char *s_schema =
    "CREATE TABLE IF NOT EXISTS marks ("
    "  pair BLOB PRIMARY KEY, job_id INTEGER NOT NULL, token INTEGER NOT NULL,"
    "  msg_key TEXT NOT NULL, entity TEXT NOT NULL, chat TEXT NOT NULL, chat_kind TEXT NOT NULL,"
    "  text TEXT NOT NULL, payload BLOB, priority INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
    "  expires_ms INTEGER NOT NULL, llm_ms INTEGER NOT NULL, tokens INTEGER NOT NULL,"
    "  marked_at INTEGER NOT NULL, first_at INTEGER NOT NULL, outcome INTEGER NOT NULL,"
    "  reason TEXT NOT NULL, outcome_at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS posted_pairs ("
    "  pair BLOB PRIMARY KEY, entity TEXT NOT NULL, chat TEXT NOT NULL, chat_kind TEXT NOT NULL,"
    "  at INTEGER NOT NULL, doubt INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS posted_pairs_at ON posted_pairs (at);";

enum {
    S_MARK, S_RETOKEN, S_FIRST, S_OUTCOME, S_FORGET, S_POSTED, S_UNPOSTED, S_PRUNE
};

typedef struct {
    int type;                   //  S_*
    pkey_fp_t pair;
    uint64_t job_id, token;
    int64_t n[8];               //  the type's times and numbers
    int outcome;
    char *s[6];                 //  the type's strings (owned)
    void *payload;
    uint32_t payload_size;
} s_op_t;

struct sink_store_s {
    pstore_t *db;
    bool always;                //  fsync "always": marks are synced
    const char *level;          //  the synchronous level set now
    s_op_t *ops;
    size_t op_count, op_capacity;
    bool need_sync;             //  a mark waits for the next commit
    uint64_t syncs;
};

sink_store_t *sink_store_open (const char *dir, const char *fsync, char *err, size_t errlen)
{
    pstore_t *db = pstore_open (dir, "sink", fsync, s_schema, err, errlen);
    if (!db)
        return NULL;
    sink_store_t *self = pcalloc (1, sizeof *self);
    self->db = db;
    self->always = strcmp (fsync, "always") == 0;
    self->level = self->always ? "FULL" : "";
    return self;
}

static void s_op_free (s_op_t *op)
{
    for (int i = 0; i < 6; i++)
        free (op->s[i]);
    free (op->payload);
}

void sink_store_close (sink_store_t **self_p)
{
    sink_store_t *self = *self_p;
    if (!self)
        return;
    if (self->op_count)
        sink_store_commit (self);
    for (size_t i = 0; i < self->op_count; i++)
        s_op_free (&self->ops[i]);
    free (self->ops);
    pstore_close (&self->db);
    free (self);
    *self_p = NULL;
}

//  --- records --------------------------------------------------------------------------

static s_op_t *s_op (sink_store_t *self, int type, pkey_fp_t pair)
{
    self->ops = pgrow (self->ops, &self->op_capacity, self->op_count + 1, sizeof (s_op_t));
    s_op_t *op = &self->ops[self->op_count++];
    memset (op, 0, sizeof *op);
    op->type = type;
    op->pair = pair;
    return op;
}

void sink_store_mark (sink_store_t *self, const sink_mark_t *m)
{
    assert (self);
    s_op_t *op = s_op (self, S_MARK, m->pair);
    op->job_id = m->job_id;
    op->token = m->token;
    op->s[0] = pstrdup (m->msg_key);
    op->s[1] = pstrdup (m->entity);
    op->s[2] = pstrdup (m->chat);
    op->s[3] = pstrdup (m->chat_kind ? m->chat_kind : "");
    op->s[4] = pstrdup (m->text);
    op->s[5] = pstrdup (m->reason ? m->reason : "");
    op->payload = pmemdup (m->payload, m->payload_size);
    op->payload_size = m->payload_size;
    op->outcome = m->outcome;
    //  In column order: priority .. first_at, then outcome_at.
    int64_t n[8] = {m->priority, m->created_ms, m->expires_ms, (int64_t) m->llm_ms,
                    (int64_t) m->tokens, m->marked_at, m->first_at, m->outcome_at};
    memcpy (op->n, n, sizeof n);
    self->need_sync = true;
}

void sink_store_retoken (sink_store_t *self, pkey_fp_t pair, uint64_t job_id, uint64_t token)
{
    assert (self);
    s_op_t *op = s_op (self, S_RETOKEN, pair);
    op->job_id = job_id;
    op->token = token;
}

void sink_store_first (sink_store_t *self, pkey_fp_t pair, int64_t at)
{
    assert (self);
    s_op (self, S_FIRST, pair)->n[0] = at;
}

void sink_store_outcome (sink_store_t *self, pkey_fp_t pair, int outcome, const char *reason,
                         int64_t at)
{
    assert (self);
    s_op_t *op = s_op (self, S_OUTCOME, pair);
    op->outcome = outcome;
    op->s[0] = pstrdup (reason ? reason : "");
    op->n[0] = at;
}

void sink_store_forget (sink_store_t *self, pkey_fp_t pair)
{
    assert (self);
    s_op (self, S_FORGET, pair);
}

void sink_store_posted (sink_store_t *self, const sink_posted_t *p)
{
    assert (self);
    s_op_t *op = s_op (self, S_POSTED, p->pair);
    op->s[0] = pstrdup (p->entity);
    op->s[1] = pstrdup (p->chat);
    op->s[2] = pstrdup (p->chat_kind ? p->chat_kind : "");
    op->n[0] = p->at;
    op->n[1] = p->doubt;
}

void sink_store_unposted (sink_store_t *self, pkey_fp_t pair)
{
    assert (self);
    s_op (self, S_UNPOSTED, pair);
}

void sink_store_prune (sink_store_t *self, int64_t before)
{
    assert (self);
    pkey_fp_t none = {0, 0};
    s_op (self, S_PRUNE, none)->n[0] = before;
}

bool sink_store_dirty (sink_store_t *self)
{
    assert (self);
    return self->op_count > 0;
}

uint64_t sink_store_syncs (sink_store_t *self)
{
    assert (self);
    return self->syncs;
}

//  --- writing -----------------------------------------------------------------------------

static void s_bind_pair (sqlite3_stmt *st, int at, pkey_fp_t pair, uint8_t *buf)
{
    for (int i = 0; i < 8; i++) {
        buf[i] = (uint8_t) (pair.hi >> (56 - 8 * i));
        buf[8 + i] = (uint8_t) (pair.lo >> (56 - 8 * i));
    }
    sqlite3_bind_blob (st, at, buf, 16, SQLITE_STATIC);
}

static pkey_fp_t s_column_pair (sqlite3_stmt *st, int col)
{
    pkey_fp_t pair = {0, 0};
    const uint8_t *b = sqlite3_column_blob (st, col);
    if (b && sqlite3_column_bytes (st, col) == 16)
        for (int i = 0; i < 8; i++) {
            pair.hi = (pair.hi << 8) | b[i];
            pair.lo = (pair.lo << 8) | b[8 + i];
        }
    return pair;
}

static void s_apply (sink_store_t *self, s_op_t *op)
{
    pstore_t *db = self->db;
    uint8_t key[16];
    sqlite3_stmt *st = NULL;
    switch (op->type) {
    case S_MARK:
        st = pstore_stmt (db, S_MARK,
                          "INSERT OR REPLACE INTO marks (pair, job_id, token, msg_key, entity, chat,"
                          " chat_kind, text, payload, priority, created_ms, expires_ms, llm_ms, tokens,"
                          " marked_at, first_at, outcome, reason, outcome_at)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        s_bind_pair (st, 1, op->pair, key);
        sqlite3_bind_int64 (st, 2, (int64_t) op->job_id);
        sqlite3_bind_int64 (st, 3, (int64_t) op->token);
        for (int i = 0; i < 5; i++)
            sqlite3_bind_text (st, 4 + i, op->s[i], -1, SQLITE_STATIC);
        sqlite3_bind_blob (st, 9, op->payload, (int) op->payload_size, SQLITE_STATIC);
        for (int i = 0; i < 7; i++)
            sqlite3_bind_int64 (st, 10 + i, op->n[i]);
        sqlite3_bind_int (st, 17, op->outcome);
        sqlite3_bind_text (st, 18, op->s[5], -1, SQLITE_STATIC);
        sqlite3_bind_int64 (st, 19, op->n[7]);
        break;
    case S_RETOKEN:
        st = pstore_stmt (db, S_RETOKEN, "UPDATE marks SET job_id = ?, token = ? WHERE pair = ?");
        sqlite3_bind_int64 (st, 1, (int64_t) op->job_id);
        sqlite3_bind_int64 (st, 2, (int64_t) op->token);
        s_bind_pair (st, 3, op->pair, key);
        break;
    case S_FIRST:
        st = pstore_stmt (db, S_FIRST, "UPDATE marks SET first_at = ? WHERE pair = ?");
        sqlite3_bind_int64 (st, 1, op->n[0]);
        s_bind_pair (st, 2, op->pair, key);
        break;
    case S_OUTCOME:
        st = pstore_stmt (db, S_OUTCOME,
                          "UPDATE marks SET outcome = ?, reason = ?, outcome_at = ? WHERE pair = ?");
        sqlite3_bind_int (st, 1, op->outcome);
        sqlite3_bind_text (st, 2, op->s[0], -1, SQLITE_STATIC);
        sqlite3_bind_int64 (st, 3, op->n[0]);
        s_bind_pair (st, 4, op->pair, key);
        break;
    case S_FORGET:
        st = pstore_stmt (db, S_FORGET, "DELETE FROM marks WHERE pair = ?");
        s_bind_pair (st, 1, op->pair, key);
        break;
    case S_POSTED:
        st = pstore_stmt (db, S_POSTED,
                          "INSERT OR REPLACE INTO posted_pairs (pair, entity, chat, chat_kind, at,"
                          " doubt) VALUES (?, ?, ?, ?, ?, ?)");
        s_bind_pair (st, 1, op->pair, key);
        sqlite3_bind_text (st, 2, op->s[0], -1, SQLITE_STATIC);
        sqlite3_bind_text (st, 3, op->s[1], -1, SQLITE_STATIC);
        sqlite3_bind_text (st, 4, op->s[2], -1, SQLITE_STATIC);
        sqlite3_bind_int64 (st, 5, op->n[0]);
        sqlite3_bind_int64 (st, 6, op->n[1]);
        break;
    case S_UNPOSTED:
        st = pstore_stmt (db, S_UNPOSTED, "DELETE FROM posted_pairs WHERE pair = ?");
        s_bind_pair (st, 1, op->pair, key);
        break;
    case S_PRUNE:
        st = pstore_stmt (db, S_PRUNE, "DELETE FROM posted_pairs WHERE at < ?");
        sqlite3_bind_int64 (st, 1, op->n[0]);
        break;
    default:
        return;
    }
    pstore_step (db, st);
}

//  Sets SQLite's synchronous level (outside a transaction).
static int s_level (sink_store_t *self, const char *level)
{
    if (!self->always || strcmp (self->level, level) == 0)
        return 0;
    char sql[64];
    snprintf (sql, sizeof sql, "PRAGMA synchronous=%s", level);
    if (sqlite3_exec (pstore_db (self->db), sql, NULL, NULL, NULL) != SQLITE_OK) {
        plog_error ("storage %s: cannot set synchronous=%s: %s", pstore_path (self->db), level,
                    sqlite3_errmsg (pstore_db (self->db)));
        return -1;
    }
    self->level = level;
    return 0;
}

int sink_store_commit (sink_store_t *self)
{
    assert (self);
    if (!self->op_count)
        return 0;
    bool sync = self->need_sync;
    int rc = s_level (self, sync ? "FULL" : "NORMAL");
    if (rc == 0) {
        pstore_write (self->db);
        for (size_t i = 0; i < self->op_count; i++)
            s_apply (self, &self->ops[i]);
        rc = pstore_commit (self->db);
    }
    for (size_t i = 0; i < self->op_count; i++)
        s_op_free (&self->ops[i]);
    self->op_count = 0;
    self->need_sync = false;
    if (rc == 0 && sync && self->always)
        self->syncs++;
    return rc;
}

//  --- loading ----------------------------------------------------------------------------

static const char *s_text (sqlite3_stmt *st, int col)
{
    const char *s = (const char *) sqlite3_column_text (st, col);
    return s ? s : "";
}

void sink_store_load (sink_store_t *self, void *arg, sink_store_mark_fn *mark_fn,
                      sink_store_posted_fn *posted_fn)
{
    assert (self);
    sqlite3 *db = pstore_db (self->db);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2 (db,
                            "SELECT pair, entity, chat, chat_kind, at, doubt FROM posted_pairs"
                            " ORDER BY at",
                            -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step (st) == SQLITE_ROW) {
            sink_posted_t p = {s_column_pair (st, 0), s_text (st, 1),
                               s_text (st, 2),        s_text (st, 3),
                               sqlite3_column_int64 (st, 4), sqlite3_column_int (st, 5) != 0};
            posted_fn (arg, &p);
        }
    }
    sqlite3_finalize (st);
    if (sqlite3_prepare_v2 (db,
                            "SELECT pair, job_id, token, msg_key, entity, chat, chat_kind, text,"
                            " payload, priority, created_ms, expires_ms, llm_ms, tokens, marked_at,"
                            " first_at, outcome, reason, outcome_at FROM marks ORDER BY marked_at",
                            -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step (st) == SQLITE_ROW) {
            sink_mark_t m = {s_column_pair (st, 0),
                             (uint64_t) sqlite3_column_int64 (st, 1),
                             (uint64_t) sqlite3_column_int64 (st, 2),
                             s_text (st, 3),
                             s_text (st, 4),
                             s_text (st, 5),
                             s_text (st, 6),
                             s_text (st, 7),
                             sqlite3_column_blob (st, 8),
                             (uint32_t) sqlite3_column_bytes (st, 8),
                             sqlite3_column_int (st, 9),
                             sqlite3_column_int64 (st, 10),
                             sqlite3_column_int64 (st, 11),
                             (uint64_t) sqlite3_column_int64 (st, 12),
                             (uint64_t) sqlite3_column_int64 (st, 13),
                             sqlite3_column_int64 (st, 14),
                             sqlite3_column_int64 (st, 15),
                             sqlite3_column_int (st, 16),
                             s_text (st, 17),
                             sqlite3_column_int64 (st, 18)};
            mark_fn (arg, &m);
        }
    }
    sqlite3_finalize (st);
}
