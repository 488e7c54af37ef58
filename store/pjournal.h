/*  pjournal - an append-only journal of records: a daemon's durable state.

    Why this engine. A daemon's state (queued jobs, pending posts, cursors)
    changes thousands of times per loop turn. In SQLite every change is row
    work - 5 to 7 statements per job, 30 to 70 us of CPU - and that, not
    fsync, held the pipeline at 13k jobs/s durable against 46k in memory.
    A journal turns a turn's changes into one buffer, one write() and at
    most one fdatasync: the cost per change is a memcpy and a CRC. The old
    data is reclaimed by whole files: the journal is cut into segments, a
    segment is deleted once no live object needs it, and the few live
    objects that pin an old segment are copied forward ("migration") so it
    can go. (The design of beanstalkd's binlog.) Measured by
    bench/bench_journal (1,000,000 records of 150 bytes, turns of 1000, the
    2-core machine): 0.25-0.4 us of CPU per record, 2.9-3.6 million
    records/s without fsync and 1.6 million with an fdatasync every turn; a
    job's life (its record, a tombstone a turn later) costs 0.3-0.45 us
    against 1.1-2.6 us for SQLite's INSERT + DELETE in the same turns; a
    million records reload in 0.25 s.

    Files, in DIR/NAME/:
        %016llx.pj     segments, ids increasing from 1. Each one starts with
                       a 16-byte header ("PJ1", format version, its id) and
                       holds whole records; a record never spans segments.
        quarantine.pj  records and bytes that could not be used (see load)
        lock           flock()ed while a process has the journal open; it
                       holds that process's PID
    A record, little endian:
        u32 length (of the payload) | u32 crc32 (zlib, over type+payload) |
        u8 type | payload

    The loop of a daemon that owns a journal (one loop owns it: it is not
    thread-safe):
        on start   pjournal_new, then pjournal_load: each record is handed to
                   the owner, which rebuilds its objects and refs the segment
                   of every record it still needs.
        each turn  pjournal_append for every change (a whole object, or a
                   tombstone that says it is gone), pjournal_sync_needed if
                   an acknowledgement will depend on it, then pjournal_commit
                   once, and only then send the acknowledgements. A failed
                   commit is sticky: stop, acknowledge nothing more.

    fsync policy (storage.fsync):
        always  a commit marked sync-needed is on disk (fdatasync) before it
                returns; unmarked records ride along with the next one (and
                at most PJOURNAL_BATCH_SYNC_MS later).
        batch   no fdatasync in the loop: survives a crash of the process; a
                power loss may undo the last PJOURNAL_BATCH_SYNC_MS of commits.
                Synced when a segment is closed and, by the commit call, at
                most every PJOURNAL_BATCH_SYNC_MS.
        off     never synced: a crash of the machine may lose recent work.

    Liveness. The engine keeps no per-object data. The owner tells it which
    segments hold records it still needs, with a count per segment: either
    pjournal_ref / pjournal_unref, or - easier - a pjournal_anchor_t embedded
    in each object (an intrusive list node that also counts as a ref), which
    lets the owner find the objects of one segment without a scan.
    Segments are deleted strictly from the oldest: a segment goes when its
    count is 0 AND every older segment is gone, because a tombstone in
    segment k cancels a record in an older segment and must outlive it. The
    segment being written is never deleted.

    The pattern, for an object that is rewritten whole on every change:

        typedef struct {
            uint64_t id;
            ...
            pjournal_anchor_t anchor;     //  the segment of its latest record
        } job_t;

        //  Store (create or change): the old record is no longer needed.
        uint64_t seg = pjournal_append (j, REC_JOB, buf, len);
        pjournal_anchor_set (j, &job->anchor, seg);

        //  Delete: a tombstone first, then drop the anchor. Without the
        //  tombstone the older record would bring the job back on reload.
        pjournal_append (j, REC_JOB_GONE, &job->id, sizeof job->id);
        pjournal_anchor_clear (j, &job->anchor);

        //  Load: a record replaces what an older one said.
        static int s_replay (void *arg, uint64_t seg, uint8_t type,
                             const void *data, size_t len, char *reason, size_t rlen)
        {
            ... decode; on failure: snprintf (reason, rlen, "bad job"); return -1;
            REC_JOB:      find or create the job; pjournal_anchor_set (j, &job->anchor, seg);
            REC_JOB_GONE: if known: pjournal_anchor_clear (j, &job->anchor); free it
            return 0;
        }

        //  Migration, once per turn, bounded so a turn stays short:
        uint64_t old;
        if (pjournal_wants_migration (j, &old)) {
            pjournal_anchor_t *a;
            for (int n = 0; n < 1000 && (a = pjournal_anchor_first (j, old)); n++) {
                job_t *job = PJOURNAL_CONTAINER (a, job_t, anchor);
                ... encode; uint64_t seg = pjournal_append (j, REC_JOB, buf, len);
                pjournal_anchor_set (j, a, seg);    //  leaves old's list
            }
        }
        pjournal_commit (j);        //  old is deleted here once it is empty

    A record the owner rejects at load (callback returns -1) is copied to
    quarantine.pj with its reason; it holds no ref, so it goes with its
    segment. Until then a restart finds (and quarantines) it again: each
    quarantine entry carries its segment and offset to recognise repeats.
*/
#ifndef PJOURNAL_H_INCLUDED
#define PJOURNAL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pjournal_s pjournal_t;

//  Segment size when pjournal_new is given 0, and the smallest allowed.
#define PJOURNAL_SEGMENT_BYTES     (64u * 1024 * 1024)
#define PJOURNAL_SEGMENT_BYTES_MIN 4096u
#define PJOURNAL_SEGMENT_BYTES_MAX (1024u * 1024 * 1024)
//  The largest id a segment file found at load may have. Owners keep segment
//  ids in 32-bit tags (pseen), and ids count up from 1: a file named beyond
//  this is damage, quarantined at load, and what loads leaves room for 2^31
//  more segments.
#define PJOURNAL_SEGMENT_ID_MAX    0x7FFFFFFFu
//  The largest payload: a bigger length read from disk is damage, not data.
#define PJOURNAL_RECORD_MAX        (256u * 1024 * 1024)
//  Record framing and segment header sizes.
#define PJOURNAL_RECORD_OVERHEAD   9u
#define PJOURNAL_HEADER_BYTES      16u
#define PJOURNAL_FORMAT_VERSION    1
//  "batch" (and unmarked records under "always") are synced at most this long
//  after they were written, by the next commit. Short: a sync of a second of
//  appends (megabytes when busy) took 9-15 ms even behind the loop, and the
//  loops stalled meanwhile (file system journal commits); at half the
//  maximum rate, syncing every 20 ms took a third off the p99 from SUBMIT to
//  posted, cost no measurable throughput, and leaves a power cut less to undo.
#define PJOURNAL_BATCH_SYNC_MS     20
//  Migration starts when the bytes on disk exceed the live bytes by more than
//  this many segments and by more than the live bytes themselves (the disk
//  holds at most about twice the live data, plus this slack).
#define PJOURNAL_MIGRATE_SLACK_SEGMENTS 2

//  The quarantine's entry types (see pjournal_quarantine_read).
#define PJOURNAL_QUARANTINE_RECORD 1    //  a whole record the owner rejected
#define PJOURNAL_QUARANTINE_BYTES  2    //  raw bytes that did not parse

//  Called by pjournal_load for every record, oldest first. `data` is valid
//  only during the call. Return 0 when the record was used (or deliberately
//  ignored), -1 when it cannot be used: write why into `reason` (reason_size
//  bytes); the engine quarantines it and goes on.
typedef int (pjournal_record_fn) (void *arg, uint64_t segment, uint8_t type, const void *data,
                                  size_t len, char *reason, size_t reason_size);

//  Ties an owner's object to the segment of its latest record. Embed one in
//  each durable object and zero it; the engine links it into that segment's
//  list (so pjournal_anchor_first finds it) and counts it as a ref.
typedef struct pjournal_anchor_s {
    uint64_t segment;                   //  0 when not anchored
    struct pjournal_anchor_s *prev;     //  neighbours in the segment's list
    struct pjournal_anchor_s *next;
} pjournal_anchor_t;

//  The object holding an anchor (like the kernel's container_of).
#define PJOURNAL_CONTAINER(anchor, type, member)                                                   \
    ((type *) (void *) ((char *) (anchor) - offsetof (type, member)))

typedef struct {
    uint64_t bytes_written;     //  bytes written to segments (records and headers)
    uint64_t records_written;   //  records committed
    uint64_t records_loaded;    //  records handed to the load callback
    uint64_t commits;           //  commits that wrote something
    uint64_t writes;            //  write() calls
    uint64_t fsyncs;            //  fdatasync() calls on segments
    uint64_t dir_syncs;         //  fsync() calls on the directory
    uint64_t segments;          //  segments that exist now
    uint64_t segments_deleted;  //  segments removed since open
    uint64_t disk_bytes;        //  bytes in the segments that exist now
    uint64_t quarantined;       //  entries written to quarantine.pj since open
    uint64_t torn_tails;        //  unfinished last writes cut away at load
} pjournal_stats_t;

//  Opens (creating it) the journal DIR/NAME and locks it for this process.
//  fsync_policy: "always", "batch" or "off". segment_bytes: 0 for
//  PJOURNAL_SEGMENT_BYTES. Returns NULL with a message in err when the
//  directory cannot be made, the policy is unknown, or another process
//  holds the journal. Call pjournal_load next, even for a new journal.
//  Caller owns return value.
pjournal_t *pjournal_new (const char *dir, const char *name, const char *fsync_policy,
                          size_t segment_bytes, char *err, size_t errlen);

//  Logs a warning if DIR holds NAME.db, the SQLite file of versions before
//  the journal: it is not read, and the operator should know.
void pjournal_note_older_state (const char *dir, const char *name);

//  Commits what is pending (unless failed), syncs under always/batch,
//  unlocks, frees and nulls the caller's pointer.
void pjournal_destroy (pjournal_t **self_p);

//  Replays every record of every segment, oldest first, through fn. Damage
//  never stops it: a torn tail of the newest segment (the unfinished write
//  of a crash) is cut away; a bad record elsewhere sends the rest of its
//  segment to quarantine.pj; a record fn rejects is copied there. New
//  records then go to a new segment. Returns -1 only when the journal
//  cannot be read at all (I/O error, a newer format), with pjournal_error.
//  Call once, before any append.
int pjournal_load (pjournal_t *self, pjournal_record_fn *fn, void *arg);

//  Copies a record into this turn's buffer and returns the id of the
//  segment it will land in (a new one when it would pass segment_bytes; a
//  record bigger than a segment gets one of its own). Returns 0 when the
//  payload exceeds PJOURNAL_RECORD_MAX (nothing appended).
uint64_t pjournal_append (pjournal_t *self, uint8_t type, const void *data, size_t len);

//  Marks this turn as holding a record that must be on disk before its
//  acknowledgement leaves (honoured under "always").
void pjournal_sync_needed (pjournal_t *self);

//  Writes the turn's records (one write per segment touched), syncs as the
//  policy says, then deletes the segments nothing needs. Returns 0, or -1
//  when anything failed now or before: the error is sticky (see
//  pjournal_error) and nothing written since can be trusted to be stored.
int pjournal_commit (pjournal_t *self);

//  Syncs now whatever was written and not yet synced (for an idle timer or a
//  shutdown under "batch"). Returns 0 or -1 (sticky, like commit).
int pjournal_sync (pjournal_t *self);

//  Milliseconds until written records are due to be synced (0: now), or -1
//  when nothing waits. A loop that may sleep longer than that uses it as its
//  timeout and then calls pjournal_commit (or pjournal_sync): the time-based
//  sync happens only in those calls, never in a thread.
int64_t pjournal_sync_due (pjournal_t *self);

//  The first storage error, with path and errno text, or NULL.
const char *pjournal_error (pjournal_t *self);

//  Counts one more live object in segment `segment` / one less.
void pjournal_ref (pjournal_t *self, uint64_t segment);
void pjournal_unref (pjournal_t *self, uint64_t segment);

//  Moves an anchor to `segment` (the old one loses a ref, the new one gains
//  it); when it already is there, nothing changes.
void pjournal_anchor_set (pjournal_t *self, pjournal_anchor_t *anchor, uint64_t segment);
//  Drops an anchor: its segment loses a ref. Harmless on a cleared anchor.
void pjournal_anchor_clear (pjournal_t *self, pjournal_anchor_t *anchor);
//  An anchored object of `segment`, or NULL when it has none (left).
pjournal_anchor_t *pjournal_anchor_first (pjournal_t *self, uint64_t segment);

//  The oldest segment that exists, and its ref count. -1 when there is none.
int pjournal_oldest (pjournal_t *self, uint64_t *segment, uint64_t *refs);

//  True when old segments pin too much disk (see PJOURNAL_MIGRATE_SLACK_SEGMENTS);
//  then *segment is the oldest: re-append the objects that ref it.
bool pjournal_wants_migration (pjournal_t *self, uint64_t *segment);

//  The number of refs on `segment` (0 for one that does not exist).
uint64_t pjournal_refs (pjournal_t *self, uint64_t segment);

//  True while segment `segment` exists on disk (or is being written).
bool pjournal_segment_exists (pjournal_t *self, uint64_t segment);

//  DIR/NAME, the journal's directory.
const char *pjournal_path (pjournal_t *self);

void pjournal_stats (pjournal_t *self, pjournal_stats_t *stats);

//  Sets how long "batch" may leave written records unsynced (tests use a
//  short one). Default PJOURNAL_BATCH_SYNC_MS.
void pjournal_set_batch_interval (pjournal_t *self, int64_t ms);

//  One entry of a quarantine file: where it came from, why, and its bytes.
typedef int (pjournal_quarantine_fn) (void *arg, int kind, uint64_t segment, uint64_t offset,
                                      uint8_t type, const char *reason, const void *data,
                                      size_t len);

//  Reads a quarantine file (DIR/NAME/quarantine.pj) and calls fn for each
//  entry; kind is PJOURNAL_QUARANTINE_RECORD (type is the record's) or
//  PJOURNAL_QUARANTINE_BYTES (type 0). Stops when fn returns -1. Returns the
//  number of entries, or -1 when the file cannot be read.
int pjournal_quarantine_read (const char *path, pjournal_quarantine_fn *fn, void *arg);

#endif
