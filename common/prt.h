/*  prt - the one loop every Parley daemon runs on.

    A daemon is a czmq actor (a thread and its pipe); its server function
    builds its modules, registers them here, and calls prt_run. One loop
    turn is:

      1. wait: zmq_poll on the actor pipe, the daemon's ZeroMQ sockets and
         its plugins' file descriptors, until something is ready or the next
         deadline (a timer, a plugin's or the daemon's wake-up time);
      2. read: "$TERM" on the pipe begins the drain (the `term` hook), each
         ready socket's reader takes up to PRT_BATCH messages, each plugin
         processes its descriptors and deadlines;
      3. apply: due timers fire, then the `apply` hook decides what the turn
         does (dispatch, post, retry, expire...);
      4. commit: the `commit` hook makes everything the turn changed durable
         in one group commit; if it fails, the loop ends with -1 and nothing
         that waited for the commit is sent (the store's error is sticky);
      5. send: the `send` hook sends what may now be sent: acknowledgements
         of what is now stored, and anything else held for the commit.

    So "store, then acknowledge" is the shape of the loop, not a rule each
    daemon codes again.

    Why not czmq's zloop: zloop runs each handler on its own and has no
    end-of-turn hook, so a group commit per turn (read everything that is
    waiting, then store once, then answer) cannot be written on it without
    a zero-delay timer re-armed from every handler; and its timers are a
    list scanned every turn. This loop is the same zmq_poll underneath,
    with the turn's phases made explicit.
*/
#ifndef PRT_H_INCLUDED
#define PRT_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#define PRT_NEVER INT64_MAX
#define PRT_BATCH 512           //  messages read from one socket per turn at most

typedef struct prt_s prt_t;

//  Reads what is waiting on `sock`, at most `max` messages, without
//  blocking; returns how many it read (max means "there may be more").
typedef int (prt_read_fn) (void *arg, zsock_t *sock, int max);

//  A plugin: something with file descriptors and deadlines of its own (the
//  libcurl multi of HTTP sources, destinations and LLM calls; IRC
//  connections; a file being followed). Embed it in the plugin's struct.
typedef struct prt_io_s prt_io_t;
struct prt_io_s {
    //  Writes up to `max` poll items; returns how many it has (if more
    //  than `max`, the loop grows its array and asks again).
    int (*pollitems) (prt_io_t *io, zmq_pollitem_t *items, int max);
    //  Makes progress: its items (with revents) and whatever is due at `now`.
    void (*process) (prt_io_t *io, int64_t now, zmq_pollitem_t *items, int count);
    //  When `process` must run next without fd activity; PRT_NEVER if only on activity.
    int64_t (*wakeup) (prt_io_t *io, int64_t now);
};

typedef void (prt_timer_fn) (void *arg, int64_t now);

//  The daemon's phases; any may be NULL.
typedef struct {
    void (*apply) (void *self, int64_t now);
    //  Returns 0, or -1 when the turn's changes could not be stored: the
    //  loop then ends (the daemon stops rather than acknowledge them).
    int (*commit) (void *self);
    void (*send) (void *self, int64_t now);
    //  When `apply` must run next; PRT_NEVER if only on events.
    int64_t (*wakeup) (void *self, int64_t now);
    //  "$TERM" arrived: begin draining, and call prt_stop when done. If
    //  NULL, the loop stops at the end of the turn.
    void (*term) (void *self, int64_t now);
} prt_hooks_t;

//  `pipe` is the actor's pipe; `self` is passed to the hooks.
prt_t *prt_new (zsock_t *pipe, const prt_hooks_t *hooks, void *self);
void prt_destroy (prt_t **self_p);

//  Reads `sock` with `fn` whenever it has messages.
void prt_reader (prt_t *self, zsock_t *sock, prt_read_fn *fn, void *arg);
void prt_add_io (prt_t *self, prt_io_t *io);
void prt_remove_io (prt_t *self, prt_io_t *io);

//  A repeating timer: `fn` runs every `interval_ms` (first after one
//  interval). Returns its id, for prt_timer_next.
int prt_every (prt_t *self, int64_t interval_ms, prt_timer_fn *fn, void *arg);
//  Moves a timer's next run to `at` (e.g. to fire at once, or to change pace).
void prt_timer_next (prt_t *self, int id, int64_t at);
void prt_timer_interval (prt_t *self, int id, int64_t interval_ms);

//  Wall-clock milliseconds of the current turn; never decreases, even when
//  the system clock is set back (rate history and leases are kept in it).
int64_t prt_now (prt_t *self);
//  Reads the clock again (for work that takes long within a turn).
int64_t prt_clock (prt_t *self);

//  True once "$TERM" has arrived.
bool prt_draining (prt_t *self);
//  Ends the loop after the current turn (after its commit and send).
void prt_stop (prt_t *self);
//  Asks for another turn without waiting (work remains that a batch limit cut).
void prt_again (prt_t *self);

//  Runs turns until prt_stop. Returns 0, or -1 when a commit failed.
int prt_run (prt_t *self);

//  Counters for tests and stats: turns run, commits, and the longest turn (ms).
typedef struct {
    uint64_t turns;
    int64_t longest_turn_ms;
} prt_stats_t;
void prt_stats (prt_t *self, prt_stats_t *stats);

#endif
