/*  pjournal_int - what the journal's files share: its struct, its
    segments and the helpers both use.

    pjournal.c opens the journal, appends and commits, and deletes the
    segments nothing needs. pjournal_load.c reads it back (load and
    recovery: damage cut, stray files) and keeps the quarantine.
    pjournal_live.c keeps count of what needs each segment (refs, anchors)
    and says when migration pays. Nothing outside the journal includes
    this file.
*/
#ifndef STORE_PJOURNAL_INT_H_INCLUDED
#define STORE_PJOURNAL_INT_H_INCLUDED

#include "store/pjournal.h"
#include "store/pfile.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { PJOURNAL_SYNC_ALWAYS, PJOURNAL_SYNC_BATCH, PJOURNAL_SYNC_OFF } pjournal_policy_t;

//  The header's first bytes: the format and its version.
extern const char pjournal__magic[3];

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
} pjournal_segment_t;

//  A run of the turn buffer bound for one segment: one write() each.
typedef struct {
    pjournal_segment_t *segment;    //  where it goes
    size_t start;                   //  offset in the turn buffer
    size_t len;                     //  bytes
} pjournal_piece_t;

//  A batch sync running on a thread of its own (pjournal.c: s_behind_*).
typedef struct {
    bool running;                   //  a thread was started and not yet joined
    atomic_bool done;               //  the thread has finished its fdatasync
    pthread_t thread;
    int fd;                         //  a dup of the segment's fd, the thread's own
    int err;                        //  errno of its fdatasync, 0 if it succeeded
    pjournal_segment_t *segment;    //  the segment it syncs (the open one)
    uint64_t bytes;                 //  the segment's length when it started
    int64_t started;                //  when it started (ms, monotonic)
} pjournal_behind_t;

struct pjournal_s {
    char *path;                     //  DIR/NAME, for messages
    int dir_fd;                     //  DIR/NAME, for openat/unlinkat and fsync of names
    int lock_fd;                    //  the flock()ed lock file; closing it unlocks
    pjournal_policy_t policy;       //  always | batch | off
    size_t segment_bytes;           //  a segment is closed before it would pass this
    int64_t batch_ms;               //  longest time written records stay unsynced (not off)
    bool loaded;                    //  pjournal_load has run: appends are allowed
    bool loading;                   //  inside pjournal_load: appends are not

    pjournal_segment_t **segments;  //  existing segments, oldest first, ids increasing
    size_t nsegments;               //  how many
    size_t segments_cap;            //  allocated slots
    pjournal_segment_t *current;    //  the segment appends go to; NULL until the first append
    pjournal_segment_t *open;       //  the segment whose fd is open for writing, or NULL
    uint64_t next_id;               //  the id the next new segment gets (ids never reused)

    unsigned char *buffer;          //  this turn's records, encoded, in order
    size_t buffer_len;              //  bytes used
    size_t buffer_cap;              //  bytes allocated
    pjournal_piece_t *pieces;       //  the buffer cut by segment
    size_t npieces;                 //  how many
    size_t pieces_cap;              //  allocated slots
    size_t turn_records;            //  records in the buffer
    bool sync_needed;               //  this turn holds a record an acknowledgement waits for
    int64_t dirty_since;            //  when the oldest unsynced write was made (ms), -1 if none
    pjournal_behind_t behind;       //  batch: the sync running behind the loop

    int quarantine_fd;              //  quarantine.pj, opened on first need, else -1
    int logged;                     //  damage lines logged during this load

    bool failed;                    //  a write or sync failed: every commit fails from now on
    char error[512];                //  the first failure, with path and errno text
    pjournal_stats_t stats;         //  counters for logs and benchmarks
};

//  pjournal.c
void pjournal__put32 (unsigned char *p, uint32_t v);
void pjournal__put64 (unsigned char *p, uint64_t v);
uint32_t pjournal__get32 (const unsigned char *p);
uint64_t pjournal__get64 (const unsigned char *p);
uint32_t pjournal__crc (const unsigned char *p, size_t len);
void pjournal__header (unsigned char *p, uint64_t id);
void pjournal__segment_name (char *name, size_t size, uint64_t id);
void pjournal__fail (pjournal_t *self, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));
pjournal_segment_t *pjournal__segment_add (pjournal_t *self, uint64_t id);
//  Syncs every segment written since its last sync.
int pjournal__sync_all (pjournal_t *self);
//  Deletes segments from the oldest while nothing needs them. Before a file
//  goes, everything written after it is synced: the records that made it
//  dead (rewrites, tombstones) must not be lost with it.
void pjournal__collect (pjournal_t *self);

#endif
