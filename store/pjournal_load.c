/*  pjournal_load - the journal read back, and what could not be used. See
    pjournal.h.

    Loading replays every segment in order, cuts a damaged tail off the
    newest, and keeps what cannot be used in quarantine.pj (with why) so
    a daemon starts anyway; pjournal_quarantine_read reads that file.
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

//  Damage lines logged one by one at load before they are only counted.
#define S_LOG_BURST 10
//  A quarantine entry's fixed part: segment, offset, type, reason length.
#define S_QUARANTINE_PREFIX (8 + 8 + 1 + 2)

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
            pjournal__header (header, 0);
            if (pfile_write_all (fd, header, sizeof header, 0, NULL)) {
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
    pjournal__put64 (p, segment);
    pjournal__put64 (p + 8, offset);
    p[16] = type;
    p[17] = (unsigned char) (rlen & 0xff);
    p[18] = (unsigned char) (rlen >> 8);
    size_t payload = S_QUARANTINE_PREFIX + rlen + len;
    head[8] = (unsigned char) kind;
    uLong crc = crc32 (0L, head + 8, 1 + S_QUARANTINE_PREFIX);
    crc = crc32 (crc, (const Bytef *) reason, (uInt) rlen);
    crc = crc32_z (crc, data, len);
    pjournal__put32 (head, (uint32_t) payload);
    pjournal__put32 (head + 4, (uint32_t) crc);

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
    if (self->policy == PJOURNAL_SYNC_OFF || self->quarantine_fd < 0)
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
        pjournal__fail (self, "cannot read directory %s: %s", self->path, strerror (errno));
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
static void s_cut_damage (pjournal_t *self, pjournal_segment_t *seg, int fd,
                          const unsigned char *data, uint64_t from, uint64_t size, const char *why)
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
    else if (size < PJOURNAL_HEADER_BYTES || memcmp (data, pjournal__magic, 3))
        bad = "not a journal segment header";
    else if (data[3] > PJOURNAL_FORMAT_VERSION) {
        //  Never "repair" what a newer version wrote.
        pjournal__fail (self, "%s/%s has format version %d, this build reads up to %d", self->path,
                        name, data[3], PJOURNAL_FORMAT_VERSION);
        return -1;
    }
    else if (pjournal__get64 (data + 8) != id)
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
static void s_replay (pjournal_t *self, pjournal_segment_t *seg, const char *name, bool newest,
                      int fd, const unsigned char *data, uint64_t size, pjournal_record_fn *fn,
                      void *arg)
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
            len = pjournal__get32 (data + off);
            if (len > PJOURNAL_RECORD_MAX || len > left - PJOURNAL_RECORD_OVERHEAD) {
                torn = true;
                bad = "record length past the end";
            }
            else if (pjournal__get32 (data + off + 4)
                     != pjournal__crc (data + off + 8, 1 + (size_t) len))
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
    pjournal__segment_name (name, sizeof name, id);
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
    int rc = pfile_read_all (fd, data, size, 0);
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
    pjournal__segment_name (name, sizeof name, id);
    int fd = openat (self->dir_fd, name, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat (fd, &st)) {
        pjournal__fail (self, "cannot open %s/%s: %s", self->path, name, strerror (errno));
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
    if (pfile_read_all (fd, data, size, 0)) {
        pjournal__fail (self, "cannot read %s/%s: %s", self->path, name, strerror (errno));
        close (fd);
        return -1;
    }
    int rc = s_check_header (self, id, name, newest, data, size);
    if (rc == 1) {
        pjournal_segment_t *seg = pjournal__segment_add (self, id);
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
    if (self->policy != PJOURNAL_SYNC_OFF)
        pjournal__sync_all (self);
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
    pjournal__collect (self);
    return self->failed ? -1 : 0;
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
    int rc = pfile_read_all (fd, data, size, 0);
    close (fd);
    if (rc || size < PJOURNAL_HEADER_BYTES || memcmp (data, pjournal__magic, 3)) {
        free (data);
        return -1;
    }
    int count = 0;
    uint64_t off = PJOURNAL_HEADER_BYTES;
    while (size - off >= PJOURNAL_RECORD_OVERHEAD + S_QUARANTINE_PREFIX) {
        const unsigned char *p = data + off;
        uint64_t len = pjournal__get32 (p);
        if (len > size - off - PJOURNAL_RECORD_OVERHEAD || len < S_QUARANTINE_PREFIX
            || pjournal__get32 (p + 4) != (uint32_t) crc32_z (0L, p + 8, 1 + len))
            break;      //  an entry cut short by a crash: the end
        const unsigned char *q = p + PJOURNAL_RECORD_OVERHEAD;
        size_t rlen = (size_t) q[17] | (size_t) q[18] << 8;
        if (S_QUARANTINE_PREFIX + rlen > len)
            break;
        char *reason = pstrndup ((const char *) q + S_QUARANTINE_PREFIX, rlen);
        assert (reason);
        count++;
        int stop = fn (arg, p[8], pjournal__get64 (q), pjournal__get64 (q + 8), q[16], reason,
                       q + S_QUARANTINE_PREFIX + rlen, len - S_QUARANTINE_PREFIX - rlen);
        free (reason);
        if (stop)
            break;
        off += PJOURNAL_RECORD_OVERHEAD + len;
    }
    free (data);
    return count;
}
