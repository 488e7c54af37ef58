/*  pjournal - an append-only journal of records. See pjournal.h.

    This file opens it, appends and commits, and deletes segments nothing
    needs; pjournal_load.c reads it back and keeps the quarantine;
    pjournal_live.c counts what needs a segment (refs, anchors).
*/
#include "store/pjournal_int.h"
#include "common/palloc.h"
#include "common/plog.h"

#include <czmq.h>
#include <zlib.h>

#include <assert.h>
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

//  A turn buffer that grew past this (a migration, a burst) is given back.
#define S_BUFFER_KEEP (8u * 1024 * 1024)
const char pjournal__magic[3] = {'P', 'J', '1'};


void pjournal__put32 (unsigned char *p, uint32_t v)
{
    v = htole32 (v);
    memcpy (p, &v, 4);
}

void pjournal__put64 (unsigned char *p, uint64_t v)
{
    v = htole64 (v);
    memcpy (p, &v, 8);
}

uint32_t pjournal__get32 (const unsigned char *p)
{
    uint32_t v;
    memcpy (&v, p, 4);
    return le32toh (v);
}

uint64_t pjournal__get64 (const unsigned char *p)
{
    uint64_t v;
    memcpy (&v, p, 8);
    return le64toh (v);
}

uint32_t pjournal__crc (const unsigned char *p, size_t len)
{
    return (uint32_t) crc32 (0L, p, (uInt) len);
}

void pjournal__header (unsigned char *p, uint64_t id)
{
    memcpy (p, pjournal__magic, 3);
    p[3] = PJOURNAL_FORMAT_VERSION;
    pjournal__put32 (p + 4, 0);
    pjournal__put64 (p + 8, id);
}

void pjournal__segment_name (char *name, size_t size, uint64_t id)
{
    snprintf (name, size, "%016llx.pj", (unsigned long long) id);
}

//  Records the first failure; from now on every commit fails.
void pjournal__fail (pjournal_t *self, const char *format, ...)
{
    if (self->failed)
        return;
    va_list args;
    va_start (args, format);
    vsnprintf (self->error, sizeof self->error, format, args);
    va_end (args);
    self->failed = true;
    plog_error ("journal %s failed: %s", self->path, self->error);
}

static int s_sync_dir (pjournal_t *self)
{
    if (fsync (self->dir_fd)) {
        pjournal__fail (self, "cannot sync directory %s: %s", self->path, strerror (errno));
        return -1;
    }
    self->stats.dir_syncs++;
    return 0;
}

//  ---------------------------------------------------------------------------
//  The segment table

pjournal_segment_t *pjournal__segment_add (pjournal_t *self, uint64_t id)
{
    if (self->nsegments == self->segments_cap) {
        self->segments_cap = self->segments_cap ? self->segments_cap * 2 : 16;
        self->segments = prealloc (self->segments, self->segments_cap * sizeof *self->segments);
        assert (self->segments);
    }
    pjournal_segment_t *seg = pcalloc (1, sizeof *seg);
    assert (seg);
    seg->id = id;
    seg->fd = -1;
    self->segments[self->nsegments++] = seg;
    return seg;
}

//  Syncs a segment written since its last sync. Segments loaded from disk
//  have no fd: they are opened for the sync (a crash of the process may have
//  left their last writes in the page cache only).
static int s_segment_sync (pjournal_t *self, pjournal_segment_t *seg)
{
    if (!seg->dirty || !seg->created)
        return 0;
    int fd = seg->fd;
    if (fd < 0) {
        char name[32];
        pjournal__segment_name (name, sizeof name, seg->id);
        fd = openat (self->dir_fd, name, O_RDONLY | O_CLOEXEC);
    }
    int rc = fd < 0 ? -1 : fdatasync (fd);
    int e = errno;
    if (fd >= 0 && fd != seg->fd)
        close (fd);
    if (rc) {
        pjournal__fail (self, "cannot sync %s/%016llx.pj: %s", self->path,
                        (unsigned long long) seg->id, strerror (e));
        return -1;
    }
    seg->dirty = false;
    self->stats.fsyncs++;
    return 0;
}

//  --- batch syncs behind the loop ---------------------------------------------------
//
//  Under batch, acknowledgements never wait for a sync: it only bounds what
//  a power cut may undo (PJOURNAL_BATCH_SYNC_MS). Run in the loop, that sync of a
//  second of appends (megabytes when busy) stalled every message of the
//  moment for 10-20 ms. So when the open segment is the only one unsynced,
//  a thread of its own syncs a dup of its fd while the loop goes on. Every
//  synchronous sync (always, closing a segment, deleting one, stopping)
//  first waits for it, so nothing else changes.

static void *s_behind_run (void *arg)
{
    pjournal_behind_t *b = arg;
    b->err = fdatasync (b->fd) ? errno : 0;
    atomic_store (&b->done, true);
    return NULL;
}

//  Waits for the thread, if one runs, and takes its result.
static int s_behind_finish (pjournal_t *self)
{
    pjournal_behind_t *b = &self->behind;
    if (!b->running)
        return 0;
    pthread_join (b->thread, NULL);
    close (b->fd);
    b->running = false;
    if (b->err) {
        pjournal__fail (self, "cannot sync %s/%016llx.pj: %s", self->path,
                        (unsigned long long) b->segment->id, strerror (b->err));
        return -1;
    }
    self->stats.fsyncs++;
    //  Only this segment was unsynced when it started: if nothing was
    //  written since, nothing is; else what was is no older than its start.
    if (b->segment->bytes == b->bytes) {
        b->segment->dirty = false;
        self->dirty_since = -1;
    }
    else
        self->dirty_since = b->started;
    return 0;
}

//  Takes the thread's result if it has finished; never waits.
static void s_behind_reap (pjournal_t *self)
{
    if (self->behind.running && atomic_load (&self->behind.done))
        s_behind_finish (self);
}

//  Starts a sync of the open segment behind the loop, or syncs now when
//  other segments are unsynced too (rare: a segment loaded unsynced).
static void s_behind_start (pjournal_t *self)
{
    pjournal_behind_t *b = &self->behind;
    pjournal_segment_t *seg = self->open;
    bool alone = seg && seg->dirty && seg->fd >= 0;
    for (size_t i = 0; alone && i < self->nsegments; i++)
        if (self->segments[i] != seg && self->segments[i]->dirty && self->segments[i]->created)
            alone = false;
    int fd = alone ? dup (seg->fd) : -1;
    if (fd < 0) {
        pjournal__sync_all (self);
        return;
    }
    b->fd = fd;
    b->err = 0;
    b->segment = seg;
    b->bytes = seg->bytes;
    b->started = zclock_mono ();
    atomic_store (&b->done, false);
    if (pthread_create (&b->thread, NULL, s_behind_run, b)) {
        close (fd);
        pjournal__sync_all (self);
        return;
    }
    b->running = true;
}

//  Syncs every segment written since its last sync.
int pjournal__sync_all (pjournal_t *self)
{
    if (s_behind_finish (self))
        return -1;
    for (size_t i = 0; i < self->nsegments; i++)
        if (s_segment_sync (self, self->segments[i]))
            return -1;
    self->dirty_since = -1;
    return 0;
}

//  Closes the segment open for writing: it will not be written again, so
//  under always/batch it is synced now (later syncs only touch the new one).
static int s_segment_close (pjournal_t *self)
{
    pjournal_segment_t *seg = self->open;
    if (!seg)
        return 0;
    if (s_behind_finish (self))
        return -1;
    int rc = self->policy == PJOURNAL_SYNC_OFF ? 0 : s_segment_sync (self, seg);
    close (seg->fd);
    seg->fd = -1;
    self->open = NULL;
    //  Closed segments are synced and loaded ones were synced by the load:
    //  only the open one is ever unsynced, and there is none now.
    if (rc == 0 && self->policy != PJOURNAL_SYNC_OFF)
        self->dirty_since = -1;
    return rc;
}

//  Deletes segments from the oldest while nothing needs them. Before a file
//  goes, everything written after it is synced: the records that made it
//  dead (rewrites, tombstones) must not be lost with it.
void pjournal__collect (pjournal_t *self)
{
    bool deleted = false;
    while (!self->failed && self->nsegments > 1) {
        pjournal_segment_t *seg = self->segments[0];
        if (seg->refs || seg->pending)
            break;
        if (!deleted && self->policy != PJOURNAL_SYNC_OFF && pjournal__sync_all (self))
            return;
        char name[32];
        pjournal__segment_name (name, sizeof name, seg->id);
        if (seg->created && unlinkat (self->dir_fd, name, 0) && errno != ENOENT) {
            pjournal__fail (self, "cannot delete %s/%s: %s", self->path, name, strerror (errno));
            return;
        }
        assert (seg != self->open && seg != self->current);
        deleted = true;
        self->stats.segments_deleted++;
        memmove (self->segments, self->segments + 1, --self->nsegments * sizeof *self->segments);
        free (seg);
    }
    if (deleted && self->policy != PJOURNAL_SYNC_OFF)
        s_sync_dir (self);
}

//  ---------------------------------------------------------------------------
//  Open and close

static int s_policy (const char *name)
{
    if (!name || strcmp (name, "always") == 0)
        return PJOURNAL_SYNC_ALWAYS;
    if (strcmp (name, "batch") == 0)
        return PJOURNAL_SYNC_BATCH;
    if (strcmp (name, "off") == 0)
        return PJOURNAL_SYNC_OFF;
    return -1;
}

//  Takes the journal's lock, or explains who holds it. flock, not a PID
//  file alone: the kernel drops it when the holder dies, however it dies.
static int s_lock (pjournal_t *self, char *err, size_t errlen)
{
    self->lock_fd = openat (self->dir_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (self->lock_fd < 0) {
        snprintf (err, errlen, "cannot open %s/lock: %s", self->path, strerror (errno));
        return -1;
    }
    if (flock (self->lock_fd, LOCK_EX | LOCK_NB)) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread (self->lock_fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn (pid, "\n")] = 0;
        if (e == EWOULDBLOCK)
            snprintf (err, errlen, "journal %s is in use by another process (pid %s)", self->path,
                      *pid ? pid : "unknown");
        else
            snprintf (err, errlen, "cannot lock %s/lock: %s", self->path, strerror (e));
        return -1;
    }
    char pid[32];
    int n = snprintf (pid, sizeof pid, "%ld\n", (long) getpid ());
    if (ftruncate (self->lock_fd, 0) || pfile_write_all (self->lock_fd, pid, (size_t) n, 0, NULL))
        plog_warn ("journal %s: cannot write the pid into lock: %s", self->path, strerror (errno));
    return 0;
}

pjournal_t *pjournal_new (const char *dir, const char *name, const char *fsync_policy,
                          size_t segment_bytes, char *err, size_t errlen)
{
    assert (dir && name);
    int policy = s_policy (fsync_policy);
    if (policy < 0) {
        snprintf (err, errlen, "unknown fsync policy \"%s\" (always, batch or off)", fsync_policy);
        return NULL;
    }
    if (segment_bytes == 0)
        segment_bytes = PJOURNAL_SEGMENT_BYTES;
    if (segment_bytes < PJOURNAL_SEGMENT_BYTES_MIN)
        segment_bytes = PJOURNAL_SEGMENT_BYTES_MIN;
    if (segment_bytes > PJOURNAL_SEGMENT_BYTES_MAX)
        segment_bytes = PJOURNAL_SEGMENT_BYTES_MAX;

    pjournal_t *self = pcalloc (1, sizeof *self);
    assert (self);
    self->dir_fd = self->lock_fd = self->quarantine_fd = -1;
    self->policy = (pjournal_policy_t) policy;
    self->segment_bytes = segment_bytes;
    self->batch_ms = PJOURNAL_BATCH_SYNC_MS;
    self->dirty_since = -1;
    self->next_id = 1;
    size_t len = strlen (dir) + strlen (name) + 2;
    self->path = pmalloc (len);
    assert (self->path);
    snprintf (self->path, len, "%s/%s", dir, name);

    if (zsys_dir_create ("%s", self->path)) {
        snprintf (err, errlen, "cannot create %s: %s", self->path, strerror (errno));
        pjournal_destroy (&self);
        return NULL;
    }
    self->dir_fd = open (self->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (self->dir_fd < 0) {
        snprintf (err, errlen, "cannot open %s: %s", self->path, strerror (errno));
        pjournal_destroy (&self);
        return NULL;
    }
    if (s_lock (self, err, errlen)) {
        pjournal_destroy (&self);
        return NULL;
    }
    return self;
}

void pjournal_destroy (pjournal_t **self_p)
{
    assert (self_p);
    pjournal_t *self = *self_p;
    if (!self)
        return;
    //  A clean stop leaves nothing unwritten, and under batch nothing unsynced.
    if (self->loaded && !self->failed) {
        pjournal_commit (self);
        pjournal_sync (self);
    }
    s_behind_finish (self);     //  its fd and thread, whatever became of the journal
    for (size_t i = 0; i < self->nsegments; i++) {
        if (self->segments[i]->fd >= 0)
            close (self->segments[i]->fd);
        free (self->segments[i]);
    }
    free (self->segments);
    free (self->buffer);
    free (self->pieces);
    if (self->quarantine_fd >= 0)
        close (self->quarantine_fd);
    if (self->lock_fd >= 0)
        close (self->lock_fd);
    if (self->dir_fd >= 0)
        close (self->dir_fd);
    free (self->path);
    free (self);
    *self_p = NULL;
}

//  ---------------------------------------------------------------------------
//  Writing

static void s_reserve (pjournal_t *self, size_t more)
{
    if (self->buffer_len + more <= self->buffer_cap)
        return;
    size_t cap = self->buffer_cap ? self->buffer_cap : 64 * 1024;
    while (cap < self->buffer_len + more)
        cap *= 2;
    self->buffer = prealloc (self->buffer, cap);
    assert (self->buffer);
    self->buffer_cap = cap;
}

static pjournal_piece_t *s_piece_start (pjournal_t *self, pjournal_segment_t *seg)
{
    if (self->npieces == self->pieces_cap) {
        self->pieces_cap = self->pieces_cap ? self->pieces_cap * 2 : 8;
        self->pieces = prealloc (self->pieces, self->pieces_cap * sizeof *self->pieces);
        assert (self->pieces);
    }
    pjournal_piece_t *piece = &self->pieces[self->npieces++];
    piece->segment = seg;
    piece->start = self->buffer_len;
    piece->len = 0;
    return piece;
}

//  Starts the next segment: its header leads its piece of the buffer.
static pjournal_segment_t *s_rotate (pjournal_t *self)
{
    //  Loaded ids end at PJOURNAL_SEGMENT_ID_MAX: 2^31 rotations from there.
    assert (self->next_id <= UINT32_MAX);
    pjournal_segment_t *seg = pjournal__segment_add (self, self->next_id++);
    self->current = seg;
    pjournal_piece_t *piece = s_piece_start (self, seg);
    s_reserve (self, PJOURNAL_HEADER_BYTES);
    pjournal__header (self->buffer + self->buffer_len, seg->id);
    self->buffer_len += PJOURNAL_HEADER_BYTES;
    piece->len += PJOURNAL_HEADER_BYTES;
    seg->pending = PJOURNAL_HEADER_BYTES;
    return seg;
}

uint64_t pjournal_append (pjournal_t *self, uint8_t type, const void *data, size_t len)
{
    assert (self);
    assert (self->loaded && !self->loading);
    assert (data || len == 0);
    if (len > PJOURNAL_RECORD_MAX)
        return 0;
    //  Failed: nothing will be written again; do not let the buffer grow
    //  while the daemon stops.
    if (self->failed && self->current)
        return self->current->id;
    size_t size = PJOURNAL_RECORD_OVERHEAD + len;
    pjournal_segment_t *seg = self->current;
    //  A segment with at least one record is closed before it would pass
    //  segment_bytes; an empty one takes any record, however big.
    if (!seg
        || (seg->bytes + seg->pending > PJOURNAL_HEADER_BYTES
            && seg->bytes + seg->pending + size > self->segment_bytes))
        seg = s_rotate (self);
    else if (!self->npieces || self->pieces[self->npieces - 1].segment != seg)
        s_piece_start (self, seg);
    pjournal_piece_t *piece = &self->pieces[self->npieces - 1];

    s_reserve (self, size);
    unsigned char *p = self->buffer + self->buffer_len;
    pjournal__put32 (p, (uint32_t) len);
    p[8] = type;
    if (len)
        memcpy (p + 9, data, len);
    pjournal__put32 (p + 4, pjournal__crc (p + 8, 1 + len));
    self->buffer_len += size;
    piece->len += size;
    seg->pending += size;
    seg->records++;
    self->turn_records++;
    return seg->id;
}

void pjournal_sync_needed (pjournal_t *self)
{
    assert (self);
    self->sync_needed = true;
}

//  Writes one piece: makes the segment's file first if it is new. On a
//  failure the file is cut back to its last whole record, so nothing can
//  ever be appended after half a record.
static int s_write_piece (pjournal_t *self, pjournal_piece_t *piece)
{
    pjournal_segment_t *seg = piece->segment;
    char name[32];
    pjournal__segment_name (name, sizeof name, seg->id);
    if (seg != self->open) {
        if (s_segment_close (self))
            return -1;
        int fd = openat (self->dir_fd, name,
                         O_WRONLY | (seg->created ? 0 : O_CREAT | O_EXCL) | O_CLOEXEC, 0644);
        if (fd < 0) {
            pjournal__fail (self, "cannot create %s/%s: %s", self->path, name, strerror (errno));
            return -1;
        }
        bool made = !seg->created;
        seg->fd = fd;
        seg->created = true;
        self->open = seg;
        //  The name must survive a power loss as surely as what is in it.
        if (made && self->policy != PJOURNAL_SYNC_OFF && s_sync_dir (self))
            return -1;
    }
    if (pfile_write_all (seg->fd, self->buffer + piece->start, piece->len, seg->bytes, NULL)) {
        int e = errno;
        pjournal__fail (self, "cannot write %s/%s: %s", self->path, name, strerror (e));
        if (seg->bytes == 0) {
            //  Made by this commit: nothing in it is whole.
            if (unlinkat (self->dir_fd, name, 0) == 0)
                seg->created = false;
        }
        else if (ftruncate (seg->fd, (off_t) seg->bytes))
            plog_error ("journal %s: cannot truncate %s after a failed write: %s", self->path,
                        name, strerror (errno));
        return -1;
    }
    self->stats.writes++;
    self->stats.bytes_written += piece->len;
    seg->bytes += piece->len;
    seg->pending -= piece->len;
    if (!seg->dirty) {
        seg->dirty = true;
        if (self->dirty_since < 0)
            self->dirty_since = zclock_mono ();
    }
    return 0;
}

int pjournal_commit (pjournal_t *self)
{
    assert (self);
    assert (!self->loading);
    if (self->failed)
        return -1;
    if (self->npieces) {
        for (size_t i = 0; i < self->npieces; i++)
            if (s_write_piece (self, &self->pieces[i]))
                return -1;
        self->stats.records_written += self->turn_records;
        self->stats.commits++;
        self->turn_records = 0;
        self->npieces = 0;
        self->buffer_len = 0;
        if (self->buffer_cap > S_BUFFER_KEEP) {
            free (self->buffer);
            self->buffer = NULL;
            self->buffer_cap = 0;
        }
    }
    s_behind_reap (self);
    if (self->policy != PJOURNAL_SYNC_OFF && self->dirty_since >= 0) {
        bool due = zclock_mono () - self->dirty_since >= self->batch_ms;
        if (self->policy == PJOURNAL_SYNC_ALWAYS && (self->sync_needed || due))
            pjournal__sync_all (self);
        else if (due && !self->behind.running)
            s_behind_start (self);
    }
    self->sync_needed = false;
    pjournal__collect (self);
    return self->failed ? -1 : 0;
}

int pjournal_sync (pjournal_t *self)
{
    assert (self);
    if (self->failed)
        return -1;
    if (self->policy != PJOURNAL_SYNC_OFF && self->dirty_since >= 0)
        pjournal__sync_all (self);
    return self->failed ? -1 : 0;
}

int64_t pjournal_sync_due (pjournal_t *self)
{
    assert (self);
    if (self->policy == PJOURNAL_SYNC_OFF || self->failed || self->dirty_since < 0)
        return -1;
    if (self->behind.running)
        return 5;       //  look again soon: its result is taken by a commit
    int64_t left = self->dirty_since + self->batch_ms - zclock_mono ();
    return left > 0 ? left : 0;
}

const char *pjournal_error (pjournal_t *self)
{
    assert (self);
    return self->failed ? self->error : NULL;
}

//  ---------------------------------------------------------------------------
//  Stats and settings

const char *pjournal_path (pjournal_t *self)
{
    assert (self);
    return self->path;
}

void pjournal_stats (pjournal_t *self, pjournal_stats_t *stats)
{
    assert (self);
    assert (stats);
    *stats = self->stats;
    stats->segments = 0;
    stats->disk_bytes = 0;
    for (size_t i = 0; i < self->nsegments; i++)
        if (self->segments[i]->created) {
            stats->segments++;
            stats->disk_bytes += self->segments[i]->bytes;
        }
}

void pjournal_set_batch_interval (pjournal_t *self, int64_t ms)
{
    assert (self);
    self->batch_ms = ms;
}

void pjournal_note_older_state (const char *dir, const char *name)
{
    char old[4096];
    struct stat st;
    snprintf (old, sizeof old, "%s/%s.db", dir, name);
    if (stat (old, &st) == 0)
        plog_warn ("%s is from an older version and is not read; the state is now in %s/%s/", old,
                   dir, name);
}
