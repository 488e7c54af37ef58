/*  pstore - SQLite plumbing shared by the broker's, poller's and sink's stores.

    One database file per daemon (storage.dataDir/NAME.db) in WAL mode, with
    storage.fsync mapped to SQLite's synchronous setting:
        always  synchronous=FULL    every commit is on disk before it returns
        batch   synchronous=NORMAL  survives a crash of the process; a power
                                    loss may undo the last commits
        off     synchronous=OFF     fastest; a crash of the machine may lose
                                    recent work or corrupt the file
    Writes are grouped: pstore_write () opens a transaction if none is open,
    pstore_commit () ends it. Any SQLite error in between makes the commit
    fail, so a daemon never acknowledges what it could not store.
*/
#ifndef PSTORE_H_INCLUDED
#define PSTORE_H_INCLUDED

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct pstore_s pstore_t;

#define PSTORE_MAX_STMTS 32

//  Opens dir/NAME.db (creating dir and the file), applies the fsync policy
//  and runs `schema` (CREATE TABLE IF NOT EXISTS ...). NULL + err on failure.
pstore_t *pstore_open (const char *dir, const char *name, const char *fsync, const char *schema,
                       char *err, size_t errlen);
void pstore_close (pstore_t **self_p);

sqlite3 *pstore_db (pstore_t *self);
const char *pstore_path (pstore_t *self);

//  The prepared statement number `slot` (0..PSTORE_MAX_STMTS-1) for `sql`,
//  prepared on first use and reset for reuse.
sqlite3_stmt *pstore_stmt (pstore_t *self, int slot, const char *sql);

//  Steps a statement to completion (or to its first row for a query) and
//  records any error. Returns the sqlite3_step result.
int pstore_step (pstore_t *self, sqlite3_stmt *stmt);

//  Opens a transaction if none is open.
void pstore_write (pstore_t *self);

//  Commits the open transaction, if any. Returns 0, or -1 (logged) when
//  anything since the last commit failed.
int pstore_commit (pstore_t *self);

//  True between pstore_write and pstore_commit.
bool pstore_in_transaction (pstore_t *self);

#endif
