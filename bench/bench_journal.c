/*  bench_journal - what a durable job costs: the journal against SQLite.

    Usage: bench_journal [RECORDS] [DIR]      (default 1000000, a new
                                               directory under $TMPDIR or /tmp)

    All runs write RECORDS records of 150 bytes in turns of 1000 (one
    commit per turn), for each fsync policy (always: every turn marked
    sync-needed):
      append     the journal alone: every record stays live. Then the time to
                 reload those RECORDS records.
      lifecycle  a job's life: a record when it is queued, a tombstone one
                 turn later when it is done (anchors, so segments are deleted
                 as they empty).
      sqlite     the same life the way the daemons stored it before the journal
                 (store/pstore.c: WAL, one transaction per turn, an INSERT of
                 the row, a DELETE by key one turn later, synchronous
                 OFF/NORMAL/FULL for off/batch/always): a row of an id and
                 a 150-byte blob;
      sqlite-16  the same with the broker's jobs table (16 columns, the same
                 ~150 bytes). Both are lower bounds for the daemons, which
                 run 5 to 7 statements per job, not 2.
    Prints jobs (or records) per second, MB/s, CPU microseconds per job and
    fsyncs. Asserts nothing.
*/
#include "store/pjournal.h"
#include "store/pstore.h"
#include "common/plog.h"

#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define S_PAYLOAD 150
#define S_TURN    1000

static const char *s_policies[] = {"off", "batch", "always"};

typedef struct {
    double wall;        //  seconds
    double cpu;         //  user + system seconds
} s_clock_t;

static s_clock_t s_clock (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    struct rusage ru;
    getrusage (RUSAGE_SELF, &ru);
    s_clock_t c = {(double) ts.tv_sec + (double) ts.tv_nsec / 1e9,
                   (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6
                       + (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6};
    return c;
}

static s_clock_t s_since (s_clock_t start)
{
    s_clock_t now = s_clock ();
    s_clock_t d = {now.wall - start.wall, now.cpu - start.cpu};
    return d;
}

static int s_remove_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st;
    (void) flag;
    (void) ftw;
    return remove (path);
}

static void s_clean (const char *dir, const char *name)
{
    char path[1100];
    snprintf (path, sizeof path, "%s/%s", dir, name);
    nftw (path, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

//  A job: its id, and the payload a daemon would store (150 bytes).
static void s_job (unsigned char *buf, uint64_t id)
{
    memcpy (buf, &id, 8);
    for (int k = 8; k < S_PAYLOAD; k++)
        buf[k] = (unsigned char) (id * 13 + (uint64_t) k);
}

//  One line of the table; mb and fsyncs < 0 when not known (SQLite).
static void s_row (const char *what, const char *policy, size_t count, s_clock_t t, double mb,
                   long long fsyncs)
{
    char rate[32] = "-", syncs[32] = "-";
    if (mb >= 0)
        snprintf (rate, sizeof rate, "%.1f", mb / t.wall);
    if (fsyncs >= 0)
        snprintf (syncs, sizeof syncs, "%lld", fsyncs);
    printf ("| %-9s | %-6s | %10.0f | %7s | %6.2f | %6.2f | %6s |\n", what, policy,
            (double) count / t.wall, rate, t.cpu * 1e6 / (double) count, t.wall, syncs);
    fflush (stdout);
}

static pjournal_t *s_open (const char *dir, const char *name, const char *policy)
{
    char err[256];
    pjournal_t *j = pjournal_new (dir, name, policy, 0, err, sizeof err);
    if (!j) {
        fprintf (stderr, "bench_journal: %s\n", err);
        exit (1);
    }
    return j;
}

static int s_ref_all (void *arg, uint64_t segment, uint8_t type, const void *data, size_t len,
                      char *reason, size_t reason_size)
{
    (void) type;
    (void) data;
    (void) len;
    (void) reason;
    (void) reason_size;
    pjournal_ref (arg, segment);
    return 0;
}

//  Appends records that all stay live, then reloads them.
static void s_append (const char *dir, const char *policy, size_t count)
{
    s_clean (dir, "append");
    pjournal_t *j = s_open (dir, "append", policy);
    pjournal_load (j, s_ref_all, j);
    unsigned char buf[S_PAYLOAD];
    s_clock_t start = s_clock ();
    for (size_t i = 0; i < count; i++) {
        s_job (buf, i);
        pjournal_ref (j, pjournal_append (j, 1, buf, sizeof buf));
        if ((i + 1) % S_TURN == 0 || i + 1 == count) {
            if (strcmp (policy, "always") == 0)
                pjournal_sync_needed (j);
            if (pjournal_commit (j)) {
                fprintf (stderr, "bench_journal: %s\n", pjournal_error (j));
                exit (1);
            }
        }
    }
    s_clock_t t = s_since (start);
    pjournal_stats_t st;
    pjournal_stats (j, &st);
    s_row ("append", policy, count, t, (double) st.bytes_written / 1e6, (long long) st.fsyncs);
    pjournal_destroy (&j);

    //  The reload: every record read, checked and handed to the owner.
    start = s_clock ();
    j = s_open (dir, "append", policy);
    pjournal_load (j, s_ref_all, j);
    t = s_since (start);
    pjournal_stats (j, &st);
    s_row ("reload", policy, (size_t) st.records_loaded, t, (double) st.disk_bytes / 1e6,
           (long long) st.fsyncs);
    pjournal_destroy (&j);
    s_clean (dir, "append");
}

//  A job queued in one turn and done in the next.
typedef struct {
    uint64_t id;
    pjournal_anchor_t anchor;
} s_bench_job_t;

static void s_lifecycle (const char *dir, const char *policy, size_t count)
{
    s_clean (dir, "lifecycle");
    pjournal_t *j = s_open (dir, "lifecycle", policy);
    pjournal_load (j, s_ref_all, j);
    s_bench_job_t *jobs = calloc (2 * S_TURN, sizeof *jobs);   //  this turn's and the last's
    unsigned char buf[S_PAYLOAD];
    s_clock_t start = s_clock ();
    for (size_t turn = 0; turn * S_TURN < count + S_TURN; turn++) {
        s_bench_job_t *now = jobs + (turn % 2) * S_TURN, *last = jobs + ((turn + 1) % 2) * S_TURN;
        //  Last turn's jobs are done: a tombstone each.
        for (size_t k = 0; turn > 0 && k < S_TURN && (turn - 1) * S_TURN + k < count; k++) {
            pjournal_append (j, 2, &last[k].id, sizeof last[k].id);
            pjournal_anchor_clear (j, &last[k].anchor);
        }
        for (size_t k = 0; k < S_TURN && turn * S_TURN + k < count; k++) {
            now[k].id = turn * S_TURN + k;
            s_job (buf, now[k].id);
            pjournal_anchor_set (j, &now[k].anchor, pjournal_append (j, 1, buf, sizeof buf));
        }
        if (strcmp (policy, "always") == 0)
            pjournal_sync_needed (j);
        if (pjournal_commit (j)) {
            fprintf (stderr, "bench_journal: %s\n", pjournal_error (j));
            exit (1);
        }
    }
    s_clock_t t = s_since (start);
    pjournal_stats_t st;
    pjournal_stats (j, &st);
    s_row ("lifecycle", policy, count, t, (double) st.bytes_written / 1e6, (long long) st.fsyncs);
    pjournal_destroy (&j);
    free (jobs);
    s_clean (dir, "lifecycle");
}

//  The broker's jobs table as it was in SQLite: the same ~150 bytes as 16 columns.
static const char *s_jobs_schema =
    "CREATE TABLE IF NOT EXISTS jobs ("
    "  id INTEGER PRIMARY KEY, entity TEXT NOT NULL, msg_key TEXT NOT NULL, chat TEXT NOT NULL,"
    "  chat_kind TEXT NOT NULL, priority INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
    "  enqueued_ms INTEGER NOT NULL, not_before INTEGER NOT NULL, expires_ms INTEGER NOT NULL,"
    "  attempt INTEGER NOT NULL, failures INTEGER NOT NULL, committed INTEGER NOT NULL,"
    "  token INTEGER NOT NULL, payload BLOB, history TEXT);";

static void s_insert_job_row (pstore_t *db, uint64_t id, const unsigned char *buf)
{
    char msg_key[32], chat[32];
    snprintf (msg_key, sizeof msg_key, "twitch:%013llu", (unsigned long long) id);
    snprintf (chat, sizeof chat, "chat-%05llu", (unsigned long long) (id % 1000));
    sqlite3_stmt *st = pstore_stmt (
        db, 2,
        "INSERT INTO jobs (id, entity, msg_key, chat, chat_kind, priority, created_ms, enqueued_ms,"
        " expires_ms, payload, not_before, attempt, failures, committed, token, history)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    int64_t now = 1790000000000 + (int64_t) id;
    sqlite3_bind_int64 (st, 1, (sqlite3_int64) id);
    sqlite3_bind_text (st, 2, "entity-3", -1, SQLITE_STATIC);
    sqlite3_bind_text (st, 3, msg_key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text (st, 4, chat, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text (st, 5, "group", -1, SQLITE_STATIC);
    sqlite3_bind_int (st, 6, 1);
    sqlite3_bind_int64 (st, 7, now);
    sqlite3_bind_int64 (st, 8, now);
    sqlite3_bind_int64 (st, 9, now + 600000);
    sqlite3_bind_blob (st, 10, buf, 60, SQLITE_STATIC);
    sqlite3_bind_int64 (st, 11, 0);
    sqlite3_bind_int (st, 12, 0);
    sqlite3_bind_int (st, 13, 0);
    sqlite3_bind_int (st, 14, 0);
    sqlite3_bind_int64 (st, 15, (sqlite3_int64) id * 7);
    sqlite3_bind_text (st, 16, "", -1, SQLITE_STATIC);
    pstore_step (db, st);
}

//  wide: the broker's 16-column row instead of an id and a 150-byte blob.
static void s_sqlite (const char *dir, const char *policy, size_t count, bool wide)
{
    char path[1100];
    snprintf (path, sizeof path, "%s/sqlite.db", dir);
    remove (path);
    char err[256];
    pstore_t *db = pstore_open (dir, "sqlite", policy,
                                wide ? s_jobs_schema
                                     : "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY,"
                                       " payload BLOB NOT NULL);",
                                err, sizeof err);
    if (!db) {
        fprintf (stderr, "bench_journal: %s\n", err);
        exit (1);
    }
    unsigned char buf[S_PAYLOAD];
    s_clock_t start = s_clock ();
    for (size_t turn = 0; turn * S_TURN < count + S_TURN; turn++) {
        pstore_write (db);
        for (size_t k = 0; turn > 0 && k < S_TURN && (turn - 1) * S_TURN + k < count; k++) {
            sqlite3_stmt *st = pstore_stmt (db, 1, "DELETE FROM jobs WHERE id = ?");
            sqlite3_bind_int64 (st, 1, (sqlite3_int64) ((turn - 1) * S_TURN + k));
            pstore_step (db, st);
        }
        for (size_t k = 0; k < S_TURN && turn * S_TURN + k < count; k++) {
            uint64_t id = turn * S_TURN + k;
            s_job (buf, id);
            if (wide) {
                s_insert_job_row (db, id, buf);
                continue;
            }
            sqlite3_stmt *st = pstore_stmt (db, 0, "INSERT INTO jobs (id, payload) VALUES (?, ?)");
            sqlite3_bind_int64 (st, 1, (sqlite3_int64) id);
            sqlite3_bind_blob (st, 2, buf, sizeof buf, SQLITE_STATIC);
            pstore_step (db, st);
        }
        if (pstore_commit (db)) {
            fprintf (stderr, "bench_journal: sqlite commit failed\n");
            exit (1);
        }
    }
    s_clock_t t = s_since (start);
    s_row (wide ? "sqlite-16" : "sqlite", policy, count, t, -1, -1);
    pstore_close (&db);
    remove (path);
    snprintf (path, sizeof path, "%s/sqlite.db-wal", dir);
    remove (path);
    snprintf (path, sizeof path, "%s/sqlite.db-shm", dir);
    remove (path);
}

int main (int argc, char *argv[])
{
    plog_init ("bench_journal", PLOG_WARN);
    size_t count = argc > 1 ? (size_t) strtoull (argv[1], NULL, 10) : 1000000;
    char dir[900];
    if (argc > 2)
        snprintf (dir, sizeof dir, "%s", argv[2]);
    else {
        const char *tmp = getenv ("TMPDIR");
        snprintf (dir, sizeof dir, "%s/bench_journal-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp (dir)) {
            perror ("mkdtemp");
            return 1;
        }
    }
    printf ("%zu records of %d bytes, turns of %d, in %s\n\n", count, S_PAYLOAD, S_TURN, dir);
    printf ("| run       | fsync  |     per s  |   MB/s  | CPU us |      s | fsyncs |\n");
    printf ("|-----------|--------|-----------:|--------:|-------:|-------:|-------:|\n");
    for (int p = 0; p < 3; p++)
        s_append (dir, s_policies[p], count);
    for (int p = 0; p < 3; p++)
        s_lifecycle (dir, s_policies[p], count);
    for (int p = 0; p < 3; p++)
        s_sqlite (dir, s_policies[p], count, false);
    for (int p = 0; p < 3; p++)
        s_sqlite (dir, s_policies[p], count, true);
    if (argc <= 2)
        rmdir (dir);
    return 0;
}
