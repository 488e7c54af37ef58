/*  pjournal - an append-only journal of records. See pjournal.h. */
#include "store/pjournal.h"
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

typedef enum { S_SYNC_ALWAYS, S_SYNC_BATCH, S_SYNC_OFF } s_policy_t;

//  Damage lines logged one by one at load before they are only counted.
#define S_LOG_BURST 10
//  A turn buffer that grew past this (a migration, a burst) is given back.
#define S_BUFFER_KEEP (8u * 1024 * 1024)
//  A quarantine entry's fixed part: segment, offset, type, reason length.
#define S_QUARANTINE_PREFIX (8 + 8 + 1 + 2)
static const char s_magic[3] = {'P', 'J', '1'};

//  One segment file, from the oldest that still exists to the one being
//  written. Allocated one by one so anchors and pieces can point at it.
typedef struct {
    uint64_t id;                    //  the file's name, %016llx.pj
    uint64_t refs;                  //  live objects that need it (refs and anchors)
    uint64_t bytes;                 //  bytes in the file (header included)
    uint64_t pending;               //  bytes for it in the turn buffer, not yet written
    uint64_t records;               //  records in it, written or pending
    pjournal_anchor_t *anchors;     //  anchored objects whose latest record is here
    int fd;                         //  open for writing (the last one written), else -1
    bool created;                   //  the file exists (false until its first commit)
    bool dirty;                     //  written but maybe not synced yet
} s_segment_t;

//  A run of the turn buffer bound for one segment: one write() each.
typedef struct {
    s_segment_t *segment;           //  where it goes
    size_t start;                   //  offset in the turn buffer
    size_t len;                     //  bytes
} s_piece_t;

struct pjournal_s {
    char *path;                     //  DIR/NAME, for messages
    int dir_fd;                     //  DIR/NAME, for openat/unlinkat and fsync of names
    int lock_fd;                    //  the flock()ed lock file; closing it unlocks
    s_policy_t policy;              //  always | batch | off
    size_t segment_bytes;           //  a segment is closed before it would pass this
    int64_t batch_ms;               //  longest time written records stay unsynced (not off)
    bool loaded;                    //  pjournal_load has run: appends are allowed
    bool loading;                   //  inside pjournal_load: appends are not

    s_segment_t **segments;         //  existing segments, oldest first, ids increasing
    size_t nsegments;               //  how many
    size_t segments_cap;            //  allocated slots
    s_segment_t *current;           //  the segment appends go to; NULL until the first append
    s_segment_t *open;              //  the segment whose fd is open for writing, or NULL
    uint64_t next_id;               //  the id the next new segment gets (ids never reused)

    unsigned char *buffer;          //  this turn's records, encoded, in order
    size_t buffer_len;              //  bytes used
    size_t buffer_cap;              //  bytes allocated
    s_piece_t *pieces;              //  the buffer cut by segment
    size_t npieces;                 //  how many
    size_t pieces_cap;              //  allocated slots
    size_t turn_records;            //  records in the buffer
    bool sync_needed;               //  this turn holds a record an acknowledgement waits for
    int64_t dirty_since;            //  when the oldest unsynced write was made (ms), -1 if none

    int quarantine_fd;              //  quarantine.pj, opened on first need, else -1
    int logged;                     //  damage lines logged during this load

    bool failed;                    //  a write or sync failed: every commit fails from now on
    char error[512];                //  the first failure, with path and errno text
    pjournal_stats_t stats;         //  counters for logs and benchmarks
};

static void s_put32 (unsigned char *p, uint32_t v)
{
    v = htole32 (v);
    memcpy (p, &v, 4);
}

static void s_put64 (unsigned char *p, uint64_t v)
{
    v = htole64 (v);
    memcpy (p, &v, 8);
}

static uint32_t s_get32 (const unsigned char *p)
{
    uint32_t v;
    memcpy (&v, p, 4);
    return le32toh (v);
}

static uint64_t s_get64 (const unsigned char *p)
{
    uint64_t v;
    memcpy (&v, p, 8);
    return le64toh (v);
}

static uint32_t s_crc (const unsigned char *p, size_t len)
{
    return (uint32_t) crc32 (0L, p, (uInt) len);
}

static void s_header (unsigned char *p, uint64_t id)
{
    memcpy (p, s_magic, 3);
    p[3] = PJOURNAL_FORMAT_VERSION;
    s_put32 (p + 4, 0);
    s_put64 (p + 8, id);
}

static void s_segment_name (char *name, size_t size, uint64_t id)
{
    snprintf (name, size, "%016llx.pj", (unsigned long long) id);
}

//  Records the first failure; from now on every commit fails.
static void s_fail (pjournal_t *self, const char *format, ...) __attribute__ ((format (printf, 2, 3)));
static void s_fail (pjournal_t *self, const char *format, ...)
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

static int s_pwrite_all (int fd, const void *data, size_t len, uint64_t offset)
{
    const char *p = data;
    while (len) {
        ssize_t n = pwrite (fd, p, len, (off_t) offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return -1;
        }
        p += n;
        len -= (size_t) n;
        offset += (uint64_t) n;
    }
    return 0;
}

static int s_pread_all (int fd, void *data, size_t len, uint64_t offset)
{
    char *p = data;
    while (len) {
        ssize_t n = pread (fd, p, len, (off_t) offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;        //  the file shrank under us
            return -1;
        }
        p += n;
        len -= (size_t) n;
        offset += (uint64_t) n;
    }
    return 0;
}

static int s_sync_dir (pjournal_t *self)
{
    if (fsync (self->dir_fd)) {
        s_fail (self, "cannot sync directory %s: %s", self->path, strerror (errno));
        return -1;
    }
    self->stats.dir_syncs++;
    return 0;
}

//  ---------------------------------------------------------------------------
//  The segment table

static s_segment_t *s_segment_add (pjournal_t *self, uint64_t id)
{
    if (self->nsegments == self->segments_cap) {
        self->segments_cap = self->segments_cap ? self->segments_cap * 2 : 16;
        self->segments = prealloc (self->segments, self->segments_cap * sizeof *self->segments);
        assert (self->segments);
    }
    s_segment_t *seg = pcalloc (1, sizeof *seg);
    assert (seg);
    seg->id = id;
    seg->fd = -1;
    self->segments[self->nsegments++] = seg;
    return seg;
}

//  The segment with this id, or NULL. Binary search: ids increase but may
//  have gaps (a file removed at load).
static s_segment_t *s_segment_find (pjournal_t *self, uint64_t id)
{
    if (self->nsegments && self->segments[self->nsegments - 1]->id == id)
        return self->segments[self->nsegments - 1];
    size_t lo = 0, hi = self->nsegments;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t at = self->segments[mid]->id;
        if (at == id)
            return self->segments[mid];
        if (at < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

//  Syncs a segment written since its last sync. Segments loaded from disk
//  have no fd: they are opened for the sync (a crash of the process may have
//  left their last writes in the page cache only).
static int s_segment_sync (pjournal_t *self, s_segment_t *seg)
{
    if (!seg->dirty || !seg->created)
        return 0;
    int fd = seg->fd;
    if (fd < 0) {
        char name[32];
        s_segment_name (name, sizeof name, seg->id);
        fd = openat (self->dir_fd, name, O_RDONLY | O_CLOEXEC);
    }
    int rc = fd < 0 ? -1 : fdatasync (fd);
    int e = errno;
    if (fd >= 0 && fd != seg->fd)
        close (fd);
    if (rc) {
        s_fail (self, "cannot sync %s/%016llx.pj: %s", self->path, (unsigned long long) seg->id,
                strerror (e));
        return -1;
    }
    seg->dirty = false;
    self->stats.fsyncs++;
    return 0;
}

//  Syncs every segment written since its last sync.
static int s_sync_all (pjournal_t *self)
{
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
    s_segment_t *seg = self->open;
    if (!seg)
        return 0;
    int rc = self->policy == S_SYNC_OFF ? 0 : s_segment_sync (self, seg);
    close (seg->fd);
    seg->fd = -1;
    self->open = NULL;
    //  Closed segments are synced and loaded ones were synced by the load:
    //  only the open one is ever unsynced, and there is none now.
    if (rc == 0 && self->policy != S_SYNC_OFF)
        self->dirty_since = -1;
    return rc;
}

//  Deletes segments from the oldest while nothing needs them. Before a file
//  goes, everything written after it is synced: the records that made it
//  dead (rewrites, tombstones) must not be lost with it.
static void s_collect (pjournal_t *self)
{
    bool deleted = false;
    while (!self->failed && self->nsegments > 1) {
        s_segment_t *seg = self->segments[0];
        if (seg->refs || seg->pending)
            break;
        if (!deleted && self->policy != S_SYNC_OFF && s_sync_all (self))
            return;
        char name[32];
        s_segment_name (name, sizeof name, seg->id);
        if (seg->created && unlinkat (self->dir_fd, name, 0) && errno != ENOENT) {
            s_fail (self, "cannot delete %s/%s: %s", self->path, name, strerror (errno));
            return;
        }
        assert (seg != self->open && seg != self->current);
        deleted = true;
        self->stats.segments_deleted++;
        memmove (self->segments, self->segments + 1, --self->nsegments * sizeof *self->segments);
        free (seg);
    }
    if (deleted && self->policy != S_SYNC_OFF)
        s_sync_dir (self);
}

//  ---------------------------------------------------------------------------
//  Quarantine

//  Appends one entry to quarantine.pj. The entry is framed like a record
//  (type = kind) so the file reads back with the same rules; its payload
//  says where the bytes came from and why they are here.
static int s_quarantine (pjournal_t *self, int kind, uint64_t segment, uint64_t offset,
                         uint8_t type, const char *reason, const void *data, size_t len)
{
    if (self->quarantine_fd < 0) {
        int fd = openat (self->dir_fd, "quarantine.pj", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                         0644);
        struct stat st;
        if (fd < 0 || fstat (fd, &st)) {
            plog_error ("journal %s: cannot open quarantine.pj: %s", self->path, strerror (errno));
            if (fd >= 0)
                close (fd);
            return -1;
        }
        if (st.st_size == 0) {
            unsigned char header[PJOURNAL_HEADER_BYTES];
            s_header (header, 0);
            if (s_pwrite_all (fd, header, sizeof header, 0)) {
                plog_error ("journal %s: cannot write quarantine.pj: %s", self->path,
                            strerror (errno));
                close (fd);
                return -1;
            }
        }
        self->quarantine_fd = fd;
    }
    size_t rlen = strlen (reason);
    if (rlen > UINT16_MAX)
        rlen = UINT16_MAX;
    if (len > UINT32_MAX - S_QUARANTINE_PREFIX - rlen) {
        plog_error ("journal %s: %zu bytes are too many for one quarantine entry", self->path, len);
        return -1;
    }
    unsigned char head[PJOURNAL_RECORD_OVERHEAD + S_QUARANTINE_PREFIX];
    unsigned char *p = head + PJOURNAL_RECORD_OVERHEAD;
    s_put64 (p, segment);
    s_put64 (p + 8, offset);
    p[16] = type;
    p[17] = (unsigned char) (rlen & 0xff);
    p[18] = (unsigned char) (rlen >> 8);
    size_t payload = S_QUARANTINE_PREFIX + rlen + len;
    head[8] = (unsigned char) kind;
    uLong crc = crc32 (0L, head + 8, 1 + S_QUARANTINE_PREFIX);
    crc = crc32 (crc, (const Bytef *) reason, (uInt) rlen);
    crc = crc32_z (crc, data, len);
    s_put32 (head, (uint32_t) payload);
    s_put32 (head + 4, (uint32_t) crc);

    struct stat st;
    if (fstat (self->quarantine_fd, &st))
        return -1;
    uint64_t at = (uint64_t) st.st_size;
    struct iovec iov[3] = {{head, sizeof head}, {(void *) reason, rlen}, {(void *) data, len}};
    size_t total = sizeof head + rlen + len;
    ssize_t n = writev (self->quarantine_fd, iov, 3);
    if (n < 0 || (size_t) n != total) {
        //  No torn entry: a later one must not land after half of this one.
        plog_error ("journal %s: cannot write quarantine.pj: %s", self->path,
                    n < 0 ? strerror (errno) : "short write");
        if (ftruncate (self->quarantine_fd, (off_t) at))
            plog_error ("journal %s: cannot truncate quarantine.pj: %s", self->path,
                        strerror (errno));
        return -1;
    }
    self->stats.quarantined++;
    return 0;
}

//  Makes the quarantine durable before the bytes it saved are cut from
//  their segment.
static int s_quarantine_sync (pjournal_t *self)
{
    if (self->policy == S_SYNC_OFF || self->quarantine_fd < 0)
        return 0;
    if (fdatasync (self->quarantine_fd)) {
        plog_error ("journal %s: cannot sync quarantine.pj: %s", self->path, strerror (errno));
        return -1;
    }
    return 0;
}

static void s_damage (pjournal_t *self, const char *format, ...) __attribute__ ((format (printf, 2, 3)));
static void s_damage (pjournal_t *self, const char *format, ...)
{
    if (self->logged++ >= S_LOG_BURST)
        return;
    char line[600];
    va_list args;
    va_start (args, format);
    vsnprintf (line, sizeof line, format, args);
    va_end (args);
    plog_warn ("journal %s: %s", self->path, line);
}

//  ---------------------------------------------------------------------------
//  Open and close

static int s_policy (const char *name)
{
    if (!name || strcmp (name, "always") == 0)
        return S_SYNC_ALWAYS;
    if (strcmp (name, "batch") == 0)
        return S_SYNC_BATCH;
    if (strcmp (name, "off") == 0)
        return S_SYNC_OFF;
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
    if (ftruncate (self->lock_fd, 0) || s_pwrite_all (self->lock_fd, pid, (size_t) n, 0))
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
    self->policy = (s_policy_t) policy;
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
//  Load

static int s_id_compare (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

//  The ids of the segment files in the directory, sorted. Caller frees.
static int s_scan (pjournal_t *self, uint64_t **ids_p, size_t *count_p)
{
    int fd = dup (self->dir_fd);
    DIR *dir = fd < 0 ? NULL : fdopendir (fd);
    if (!dir) {
        s_fail (self, "cannot read directory %s: %s", self->path, strerror (errno));
        if (fd >= 0)
            close (fd);
        return -1;
    }
    rewinddir (dir);
    uint64_t *ids = NULL;
    size_t count = 0, cap = 0;
    struct dirent *entry;
    while ((entry = readdir (dir))) {
        const char *n = entry->d_name;
        if (strlen (n) != 19 || strcmp (n + 16, ".pj") || strspn (n, "0123456789abcdef") != 16)
            continue;
        uint64_t id = strtoull (n, NULL, 16);
        if (id == 0)
            continue;       //  0 is no segment's id (the quarantine's header uses it)
        if (count == cap) {
            cap = cap ? cap * 2 : 64;
            ids = prealloc (ids, cap * sizeof *ids);
            assert (ids);
        }
        ids[count++] = id;
    }
    closedir (dir);
    if (count)
        qsort (ids, count, sizeof *ids, s_id_compare);
    *ids_p = ids;
    *count_p = count;
    return 0;
}

static bool s_all_zero (const unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i])
            return false;
    return true;
}

//  Saves bytes [from, size) of a segment to the quarantine, then cuts them
//  from the file so the next load does not find them again. When they
//  cannot be saved, they stay where they are.
static void s_cut_damage (pjournal_t *self, s_segment_t *seg, int fd, const unsigned char *data,
                          uint64_t from, uint64_t size, const char *why)
{
    s_damage (self, "segment %016llx.pj: %s at offset %llu: %llu bytes to quarantine.pj",
              (unsigned long long) seg->id, why, (unsigned long long) from,
              (unsigned long long) (size - from));
    if (s_quarantine (self, PJOURNAL_QUARANTINE_BYTES, seg->id, from, 0, why, data + from,
                      size - from)
        || s_quarantine_sync (self))
        return;
    if (ftruncate (fd, (off_t) from))
        plog_error ("journal %s: cannot truncate %016llx.pj: %s", self->path,
                    (unsigned long long) seg->id, strerror (errno));
    else
        seg->bytes = from;
}

//  Checks a segment's header. Returns 1 when its records can be read, 0
//  when the file was dealt with (removed, or left alone when its bytes
//  could not be saved), -1 when it must not be touched (a newer format).
static int s_check_header (pjournal_t *self, uint64_t id, const char *name, bool newest,
                           const unsigned char *data, uint64_t size)
{
    const char *bad = NULL;
    if (newest && (size < PJOURNAL_HEADER_BYTES || s_all_zero (data, size))) {
        //  Nothing but a name: a crash right after the newest file was made.
        plog_warn ("journal %s: segment %s holds no record (%llu bytes, an unfinished creation): "
                   "removed", self->path, name, (unsigned long long) size);
        self->stats.torn_tails++;
    }
    else if (size < PJOURNAL_HEADER_BYTES || memcmp (data, s_magic, 3))
        bad = "not a journal segment header";
    else if (data[3] > PJOURNAL_FORMAT_VERSION) {
        //  Never "repair" what a newer version wrote.
        s_fail (self, "%s/%s has format version %d, this build reads up to %d", self->path, name,
                data[3], PJOURNAL_FORMAT_VERSION);
        return -1;
    }
    else if (s_get64 (data + 8) != id)
        bad = "header names another segment";
    else
        return 1;
    if (bad) {
        s_damage (self, "segment %s: %s: %llu bytes to quarantine.pj", name, bad,
                  (unsigned long long) size);
        if (size
            && (s_quarantine (self, PJOURNAL_QUARANTINE_BYTES, id, 0, 0, bad, data, size)
                || s_quarantine_sync (self)))
            return 0;           //  not loaded, not lost
    }
    if (unlinkat (self->dir_fd, name, 0))
        plog_error ("journal %s: cannot remove %s: %s", self->path, name, strerror (errno));
    return 0;
}

//  Hands a segment's records to fn, and stops at the first bad one: cut away
//  when it is the unfinished last write of a crash, else quarantined with the
//  rest of the segment.
static void s_replay (pjournal_t *self, s_segment_t *seg, const char *name, bool newest, int fd,
                      const unsigned char *data, uint64_t size, pjournal_record_fn *fn, void *arg)
{
    uint64_t off = PJOURNAL_HEADER_BYTES;
    while (off < size) {
        uint64_t left = size - off;
        uint32_t len = 0;
        bool torn = false;          //  the record runs past the end of the file
        const char *bad = NULL;
        if (left < PJOURNAL_RECORD_OVERHEAD) {
            torn = true;
            bad = "short record";
        }
        else {
            len = s_get32 (data + off);
            if (len > PJOURNAL_RECORD_MAX || len > left - PJOURNAL_RECORD_OVERHEAD) {
                torn = true;
                bad = "record length past the end";
            }
            else if (s_get32 (data + off + 4) != s_crc (data + off + 8, 1 + (size_t) len))
                bad = "bad crc";
        }
        if (bad) {
            //  The unfinished last write of a crash ends the newest segment:
            //  a record cut short, a bad one that is the last, or zeros
            //  (space the file system allocated but never filled).
            uint64_t end = off + PJOURNAL_RECORD_OVERHEAD + len;
            if (newest && (torn || end == size || s_all_zero (data + off, left))) {
                plog_warn ("journal %s: segment %s ends with an unfinished write (%s at offset "
                           "%llu): %llu bytes cut",
                           self->path, name, bad, (unsigned long long) off,
                           (unsigned long long) left);
                self->stats.torn_tails++;
                if (ftruncate (fd, (off_t) off))
                    plog_error ("journal %s: cannot truncate %s: %s", self->path, name,
                                strerror (errno));
                else
                    seg->bytes = off;
            }
            else
                s_cut_damage (self, seg, fd, data, off, size, bad);
            return;
        }
        const unsigned char *payload = data + off + PJOURNAL_RECORD_OVERHEAD;
        uint8_t type = data[off + 8];
        char reason[256] = "";
        seg->records++;
        self->stats.records_loaded++;
        if (fn (arg, seg->id, type, payload, len, reason, sizeof reason)) {
            if (!*reason)
                snprintf (reason, sizeof reason, "rejected");
            s_damage (self, "segment %s: record at offset %llu (type %u, %u bytes) to "
                      "quarantine.pj: %s", name, (unsigned long long) off, type, len, reason);
            s_quarantine (self, PJOURNAL_QUARANTINE_RECORD, seg->id, off, type, reason, payload,
                          len);
        }
        off += PJOURNAL_RECORD_OVERHEAD + len;
    }
}

//  A file named like a segment whose id is beyond PJOURNAL_SEGMENT_ID_MAX (a
//  damaged or foreign name): owners keep segment ids in 32 bits, and new
//  segments need ids after it, so its records are not loaded. Its bytes go
//  to the quarantine and the file goes, like a segment with a bad header.
static void s_stray (pjournal_t *self, uint64_t id)
{
    char name[32];
    s_segment_name (name, sizeof name, id);
    const char *why = "segment id out of range (damaged name?)";
    int fd = openat (self->dir_fd, name, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat (fd, &st)) {
        plog_error ("journal %s: cannot open %s: %s", self->path, name, strerror (errno));
        if (fd >= 0)
            close (fd);
        return;
    }
    uint64_t size = (uint64_t) st.st_size;
    unsigned char *data = pmalloc (size ? size : 1);
    assert (data);
    int rc = s_pread_all (fd, data, size, 0);
    close (fd);
    if (rc)
        plog_error ("journal %s: cannot read %s: %s", self->path, name, strerror (errno));
    else {
        s_damage (self, "segment %s: %s: %llu bytes to quarantine.pj", name, why,
                  (unsigned long long) size);
        if (size
            && (s_quarantine (self, PJOURNAL_QUARANTINE_BYTES, id, 0, 0, why, data, size)
                || s_quarantine_sync (self)))
            rc = -1;        //  not saved: left where it is
    }
    free (data);
    if (rc == 0 && unlinkat (self->dir_fd, name, 0))
        plog_error ("journal %s: cannot remove %s: %s", self->path, name, strerror (errno));
}

//  Loads one segment. Returns -1 only when it cannot be read at all.
static int s_load_segment (pjournal_t *self, uint64_t id, bool newest, unsigned char **buf_p,
                           size_t *cap_p, pjournal_record_fn *fn, void *arg)
{
    char name[32];
    s_segment_name (name, sizeof name, id);
    int fd = openat (self->dir_fd, name, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat (fd, &st)) {
        s_fail (self, "cannot open %s/%s: %s", self->path, name, strerror (errno));
        if (fd >= 0)
            close (fd);
        return -1;
    }
    uint64_t size = (uint64_t) st.st_size;
    if (size > *cap_p) {
        free (*buf_p);
        *buf_p = pmalloc (size);
        assert (*buf_p);
        *cap_p = size;
    }
    unsigned char *data = *buf_p;
    if (s_pread_all (fd, data, size, 0)) {
        s_fail (self, "cannot read %s/%s: %s", self->path, name, strerror (errno));
        close (fd);
        return -1;
    }
    int rc = s_check_header (self, id, name, newest, data, size);
    if (rc == 1) {
        s_segment_t *seg = s_segment_add (self, id);
        seg->created = true;
        seg->bytes = size;
        seg->dirty = true;      //  a crash of the process may have left it unsynced
        s_replay (self, seg, name, newest, fd, data, size, fn, arg);
        rc = 0;
    }
    close (fd);
    return rc;
}

int pjournal_load (pjournal_t *self, pjournal_record_fn *fn, void *arg)
{
    assert (self);
    assert (fn);
    assert (!self->loaded);
    int64_t started = zclock_mono ();
    uint64_t *ids = NULL;
    size_t count = 0;
    if (s_scan (self, &ids, &count))
        return -1;
    self->loading = true;
    self->logged = 0;
    //  Sorted: names beyond the id range come last.
    while (count && ids[count - 1] > PJOURNAL_SEGMENT_ID_MAX)
        s_stray (self, ids[--count]);
    uint64_t quarantined = self->stats.quarantined;
    unsigned char *buf = NULL;
    size_t cap = 0;
    int rc = 0;
    for (size_t i = 0; i < count && rc == 0; i++)
        rc = s_load_segment (self, ids[i], i + 1 == count, &buf, &cap, fn, arg);
    free (buf);
    self->loading = false;
    if (count)
        self->next_id = ids[count - 1] + 1;
    free (ids);
    if (rc)
        return -1;
    s_quarantine_sync (self);
    //  What a crashed process wrote may still be in the page cache only;
    //  make it durable before anything is built on it (under always/batch).
    if (self->policy != S_SYNC_OFF)
        s_sync_all (self);
    self->loaded = true;
    if (self->logged > S_LOG_BURST)
        plog_warn ("journal %s: %d more damaged or rejected records not shown", self->path,
                   self->logged - S_LOG_BURST);
    char sent[64] = "";
    if (self->stats.quarantined > quarantined)
        snprintf (sent, sizeof sent, ", %llu to quarantine.pj",
                  (unsigned long long) (self->stats.quarantined - quarantined));
    plog_info ("journal %s: %llu records from %zu segments in %lld ms%s", self->path,
               (unsigned long long) self->stats.records_loaded, self->nsegments,
               (long long) (zclock_mono () - started), sent);
    //  Only now do the refs say what is live: drop what is not.
    s_collect (self);
    return self->failed ? -1 : 0;
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

static s_piece_t *s_piece_start (pjournal_t *self, s_segment_t *seg)
{
    if (self->npieces == self->pieces_cap) {
        self->pieces_cap = self->pieces_cap ? self->pieces_cap * 2 : 8;
        self->pieces = prealloc (self->pieces, self->pieces_cap * sizeof *self->pieces);
        assert (self->pieces);
    }
    s_piece_t *piece = &self->pieces[self->npieces++];
    piece->segment = seg;
    piece->start = self->buffer_len;
    piece->len = 0;
    return piece;
}

//  Starts the next segment: its header leads its piece of the buffer.
static s_segment_t *s_rotate (pjournal_t *self)
{
    //  Loaded ids end at PJOURNAL_SEGMENT_ID_MAX: 2^31 rotations from there.
    assert (self->next_id <= UINT32_MAX);
    s_segment_t *seg = s_segment_add (self, self->next_id++);
    self->current = seg;
    s_piece_t *piece = s_piece_start (self, seg);
    s_reserve (self, PJOURNAL_HEADER_BYTES);
    s_header (self->buffer + self->buffer_len, seg->id);
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
    s_segment_t *seg = self->current;
    //  A segment with at least one record is closed before it would pass
    //  segment_bytes; an empty one takes any record, however big.
    if (!seg
        || (seg->bytes + seg->pending > PJOURNAL_HEADER_BYTES
            && seg->bytes + seg->pending + size > self->segment_bytes))
        seg = s_rotate (self);
    else if (!self->npieces || self->pieces[self->npieces - 1].segment != seg)
        s_piece_start (self, seg);
    s_piece_t *piece = &self->pieces[self->npieces - 1];

    s_reserve (self, size);
    unsigned char *p = self->buffer + self->buffer_len;
    s_put32 (p, (uint32_t) len);
    p[8] = type;
    if (len)
        memcpy (p + 9, data, len);
    s_put32 (p + 4, s_crc (p + 8, 1 + len));
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
static int s_write_piece (pjournal_t *self, s_piece_t *piece)
{
    s_segment_t *seg = piece->segment;
    char name[32];
    s_segment_name (name, sizeof name, seg->id);
    if (seg != self->open) {
        if (s_segment_close (self))
            return -1;
        int fd = openat (self->dir_fd, name,
                         O_WRONLY | (seg->created ? 0 : O_CREAT | O_EXCL) | O_CLOEXEC, 0644);
        if (fd < 0) {
            s_fail (self, "cannot create %s/%s: %s", self->path, name, strerror (errno));
            return -1;
        }
        bool made = !seg->created;
        seg->fd = fd;
        seg->created = true;
        self->open = seg;
        //  The name must survive a power loss as surely as what is in it.
        if (made && self->policy != S_SYNC_OFF && s_sync_dir (self))
            return -1;
    }
    if (s_pwrite_all (seg->fd, self->buffer + piece->start, piece->len, seg->bytes)) {
        int e = errno;
        s_fail (self, "cannot write %s/%s: %s", self->path, name, strerror (e));
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
    if (self->policy != S_SYNC_OFF && self->dirty_since >= 0) {
        bool due = zclock_mono () - self->dirty_since >= self->batch_ms;
        if ((self->policy == S_SYNC_ALWAYS && self->sync_needed) || due)
            s_sync_all (self);
    }
    self->sync_needed = false;
    s_collect (self);
    return self->failed ? -1 : 0;
}

int pjournal_sync (pjournal_t *self)
{
    assert (self);
    if (self->failed)
        return -1;
    if (self->policy != S_SYNC_OFF && self->dirty_since >= 0)
        s_sync_all (self);
    return self->failed ? -1 : 0;
}

int64_t pjournal_sync_due (pjournal_t *self)
{
    assert (self);
    if (self->policy == S_SYNC_OFF || self->failed || self->dirty_since < 0)
        return -1;
    int64_t left = self->dirty_since + self->batch_ms - zclock_mono ();
    return left > 0 ? left : 0;
}

const char *pjournal_error (pjournal_t *self)
{
    assert (self);
    return self->failed ? self->error : NULL;
}

//  ---------------------------------------------------------------------------
//  Liveness

static s_segment_t *s_segment_get (pjournal_t *self, uint64_t segment)
{
    s_segment_t *seg = s_segment_find (self, segment);
    //  A ref on a segment that is gone means the owner's bookkeeping is
    //  wrong, and segments may already have been deleted under live data.
    assert (seg);
    return seg;
}

void pjournal_ref (pjournal_t *self, uint64_t segment)
{
    assert (self);
    s_segment_get (self, segment)->refs++;
}

void pjournal_unref (pjournal_t *self, uint64_t segment)
{
    assert (self);
    s_segment_t *seg = s_segment_get (self, segment);
    assert (seg->refs > 0);
    seg->refs--;
}

void pjournal_anchor_set (pjournal_t *self, pjournal_anchor_t *anchor, uint64_t segment)
{
    assert (self);
    assert (anchor);
    if (anchor->segment == segment)
        return;
    if (segment == 0) {
        pjournal_anchor_clear (self, anchor);
        return;
    }
    s_segment_t *to = s_segment_get (self, segment);
    pjournal_anchor_clear (self, anchor);
    anchor->segment = segment;
    anchor->prev = NULL;
    anchor->next = to->anchors;
    if (to->anchors)
        to->anchors->prev = anchor;
    to->anchors = anchor;
    to->refs++;
}

void pjournal_anchor_clear (pjournal_t *self, pjournal_anchor_t *anchor)
{
    assert (self);
    assert (anchor);
    if (anchor->segment == 0)
        return;
    s_segment_t *from = s_segment_get (self, anchor->segment);
    if (anchor->prev)
        anchor->prev->next = anchor->next;
    else
        from->anchors = anchor->next;
    if (anchor->next)
        anchor->next->prev = anchor->prev;
    assert (from->refs > 0);
    from->refs--;
    anchor->segment = 0;
    anchor->prev = anchor->next = NULL;
}

pjournal_anchor_t *pjournal_anchor_first (pjournal_t *self, uint64_t segment)
{
    assert (self);
    s_segment_t *seg = s_segment_find (self, segment);
    return seg ? seg->anchors : NULL;
}

int pjournal_oldest (pjournal_t *self, uint64_t *segment, uint64_t *refs)
{
    assert (self);
    if (self->nsegments == 0)
        return -1;
    if (segment)
        *segment = self->segments[0]->id;
    if (refs)
        *refs = self->segments[0]->refs;
    return 0;
}

//  The live bytes of a segment, estimated: its records' bytes times the
//  share of them that is referenced (the engine does not know which).
static uint64_t s_live_bytes (const s_segment_t *seg)
{
    uint64_t bytes = seg->bytes + seg->pending;
    if (!seg->records || bytes <= PJOURNAL_HEADER_BYTES)
        return 0;
    uint64_t refs = seg->refs < seg->records ? seg->refs : seg->records;
    return (uint64_t) ((double) (bytes - PJOURNAL_HEADER_BYTES) * (double) refs
                       / (double) seg->records);
}

bool pjournal_wants_migration (pjournal_t *self, uint64_t *segment)
{
    assert (self);
    //  The one being written never moves; a dead oldest goes by itself.
    if (self->nsegments < 2 || self->segments[0]->refs == 0)
        return false;
    uint64_t total = 0, live = 0;
    for (size_t i = 0; i < self->nsegments; i++) {
        total += self->segments[i]->bytes + self->segments[i]->pending;
        live += s_live_bytes (self->segments[i]);
    }
    uint64_t waste = total - live;
    if (waste <= (uint64_t) PJOURNAL_MIGRATE_SLACK_SEGMENTS * self->segment_bytes || waste <= live)
        return false;
    if (segment)
        *segment = self->segments[0]->id;
    return true;
}

uint64_t pjournal_refs (pjournal_t *self, uint64_t segment)
{
    assert (self);
    s_segment_t *seg = s_segment_find (self, segment);
    return seg ? seg->refs : 0;
}

bool pjournal_segment_exists (pjournal_t *self, uint64_t segment)
{
    assert (self);
    return s_segment_find (self, segment) != NULL;
}

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

//  ---------------------------------------------------------------------------
//  Reading the quarantine

int pjournal_quarantine_read (const char *path, pjournal_quarantine_fn *fn, void *arg)
{
    assert (path);
    assert (fn);
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat (fd, &st)) {
        if (fd >= 0)
            close (fd);
        return -1;
    }
    uint64_t size = (uint64_t) st.st_size;
    unsigned char *data = pmalloc (size ? size : 1);
    assert (data);
    int rc = s_pread_all (fd, data, size, 0);
    close (fd);
    if (rc || size < PJOURNAL_HEADER_BYTES || memcmp (data, s_magic, 3)) {
        free (data);
        return -1;
    }
    int count = 0;
    uint64_t off = PJOURNAL_HEADER_BYTES;
    while (size - off >= PJOURNAL_RECORD_OVERHEAD + S_QUARANTINE_PREFIX) {
        const unsigned char *p = data + off;
        uint64_t len = s_get32 (p);
        if (len > size - off - PJOURNAL_RECORD_OVERHEAD || len < S_QUARANTINE_PREFIX
            || s_get32 (p + 4) != (uint32_t) crc32_z (0L, p + 8, 1 + len))
            break;      //  an entry cut short by a crash: the end
        const unsigned char *q = p + PJOURNAL_RECORD_OVERHEAD;
        size_t rlen = (size_t) q[17] | (size_t) q[18] << 8;
        if (S_QUARANTINE_PREFIX + rlen > len)
            break;
        char *reason = pstrndup ((const char *) q + S_QUARANTINE_PREFIX, rlen);
        assert (reason);
        count++;
        int stop = fn (arg, p[8], s_get64 (q), s_get64 (q + 8), q[16], reason,
                       q + S_QUARANTINE_PREFIX + rlen, len - S_QUARANTINE_PREFIX - rlen);
        free (reason);
        if (stop)
            break;
        off += PJOURNAL_RECORD_OVERHEAD + len;
    }
    free (data);
    return count;
}
