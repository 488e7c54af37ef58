/*  pstore - SQLite plumbing. See pstore.h. */
#include "store/pstore.h"
#include "common/palloc.h"
#include "common/plog.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct pstore_s {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *stmts[PSTORE_MAX_STMTS];
    bool in_transaction;
    bool failed;                //  an error since the last commit
    char error[512];            //  the first one
};

//  mkdir -p
static int s_make_dirs (const char *dir)
{
    char path[4096];
    snprintf (path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir (path, 0755) && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return (mkdir (path, 0755) && errno != EEXIST) ? -1 : 0;
}

static void s_fail (pstore_t *self, const char *what)
{
    if (!self->failed)
        snprintf (self->error, sizeof self->error, "%s: %s", what, sqlite3_errmsg (self->db));
    self->failed = true;
}

pstore_t *pstore_open (const char *dir, const char *name, const char *fsync, const char *schema,
                       char *err, size_t errlen)
{
    if (s_make_dirs (dir)) {
        snprintf (err, errlen, "cannot create %s: %s", dir, strerror (errno));
        return NULL;
    }
    pstore_t *self = pcalloc (1, sizeof *self);
    size_t len = strlen (dir) + strlen (name) + 8;
    self->path = pmalloc (len);
    snprintf (self->path, len, "%s/%s.db", dir, name);
    if (sqlite3_open_v2 (self->path, &self->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL)
        != SQLITE_OK) {
        snprintf (err, errlen, "cannot open %s: %s", self->path,
                  self->db ? sqlite3_errmsg (self->db) : "out of memory");
        pstore_close (&self);
        return NULL;
    }
    const char *sync = strcmp (fsync, "always") == 0 ? "FULL"
                       : strcmp (fsync, "batch") == 0 ? "NORMAL"
                                                      : "OFF";
    char pragmas[512];
    //  WAL: readers never block the writer and a commit is one append.
    //  A larger autocheckpoint keeps checkpoints (the slow part) rarer.
    snprintf (pragmas, sizeof pragmas,
              "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA busy_timeout=5000;"
              "PRAGMA wal_autocheckpoint=4000; PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY;",
              sync);
    char *msg = NULL;
    if (sqlite3_exec (self->db, pragmas, NULL, NULL, &msg) != SQLITE_OK
        || sqlite3_exec (self->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf (err, errlen, "%s: %s", self->path, msg ? msg : sqlite3_errmsg (self->db));
        sqlite3_free (msg);
        pstore_close (&self);
        return NULL;
    }
    return self;
}

void pstore_close (pstore_t **self_p)
{
    pstore_t *self = *self_p;
    if (!self)
        return;
    if (self->in_transaction)
        pstore_commit (self);
    for (int i = 0; i < PSTORE_MAX_STMTS; i++)
        sqlite3_finalize (self->stmts[i]);
    sqlite3_close (self->db);
    free (self->path);
    free (self);
    *self_p = NULL;
}

sqlite3 *pstore_db (pstore_t *self)
{
    return self->db;
}

const char *pstore_path (pstore_t *self)
{
    return self->path;
}

sqlite3_stmt *pstore_stmt (pstore_t *self, int slot, const char *sql)
{
    sqlite3_stmt *stmt = self->stmts[slot];
    if (!stmt) {
        if (sqlite3_prepare_v3 (self->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL) != SQLITE_OK) {
            //  A statement that does not prepare is a bug, not a condition.
            plog_error ("cannot prepare \"%s\": %s", sql, sqlite3_errmsg (self->db));
            abort ();
        }
        self->stmts[slot] = stmt;
    }
    else {
        sqlite3_reset (stmt);
        sqlite3_clear_bindings (stmt);
    }
    return stmt;
}

int pstore_step (pstore_t *self, sqlite3_stmt *stmt)
{
    int rc = sqlite3_step (stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        s_fail (self, sqlite3_sql (stmt));
    return rc;
}

void pstore_write (pstore_t *self)
{
    if (self->in_transaction)
        return;
    if (sqlite3_exec (self->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        s_fail (self, "BEGIN");
    self->in_transaction = true;
}

int pstore_commit (pstore_t *self)
{
    if (self->in_transaction) {
        if (sqlite3_exec (self->db, self->failed ? "ROLLBACK" : "COMMIT", NULL, NULL, NULL)
            != SQLITE_OK)
            s_fail (self, "COMMIT");
        self->in_transaction = false;
    }
    if (self->failed) {
        plog_error ("storage %s failed: %s", self->path, self->error);
        self->failed = false;
        return -1;
    }
    return 0;
}

bool pstore_in_transaction (pstore_t *self)
{
    return self->in_transaction;
}
