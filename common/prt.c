/*  prt - the daemon loop. See prt.h. */
#include "common/prt.h"
#include "common/palloc.h"
#include "common/plog.h"

#include <errno.h>

#define MAX_WAIT_MS 60000       //  wake at least this often, whatever the deadlines say

typedef struct {
    zsock_t *sock;
    prt_read_fn *fn;
    void *arg;
} s_reader_t;

typedef struct {
    int64_t next;               //  next run, wall ms
    int64_t interval;
    prt_timer_fn *fn;
    void *arg;
} s_timer_t;

struct prt_s {
    zsock_t *pipe;              //  the actor's pipe: "$TERM" ends the daemon
    prt_hooks_t hooks;
    void *owner;                //  passed to the hooks
    s_reader_t *readers;
    size_t reader_count, reader_capacity;
    prt_io_t **ios;
    size_t io_count, io_capacity;
    s_timer_t *timers;
    size_t timer_count, timer_capacity;
    zmq_pollitem_t *items;      //  pipe, readers, then each plugin's items
    size_t item_capacity;
    int64_t now;                //  wall ms of this turn, never decreasing
    bool draining;
    bool stopping;
    bool again;                 //  run the next turn without waiting
    prt_stats_t stats;
};

prt_t *prt_new (zsock_t *pipe, const prt_hooks_t *hooks, void *owner)
{
    prt_t *self = pcalloc (1, sizeof *self);
    self->pipe = pipe;
    if (hooks)
        self->hooks = *hooks;
    self->owner = owner;
    prt_clock (self);
    return self;
}

void prt_destroy (prt_t **self_p)
{
    prt_t *self = *self_p;
    if (!self)
        return;
    free (self->readers);
    free (self->ios);
    free (self->timers);
    free (self->items);
    free (self);
    *self_p = NULL;
}

void prt_reader (prt_t *self, zsock_t *sock, prt_read_fn *fn, void *arg)
{
    assert (self);
    self->readers = pgrow (self->readers, &self->reader_capacity, self->reader_count + 1,
                           sizeof (s_reader_t));
    self->readers[self->reader_count++] = (s_reader_t) {sock, fn, arg};
}

void prt_add_io (prt_t *self, prt_io_t *io)
{
    assert (self);
    self->ios = pgrow (self->ios, &self->io_capacity, self->io_count + 1, sizeof (prt_io_t *));
    self->ios[self->io_count++] = io;
}

void prt_remove_io (prt_t *self, prt_io_t *io)
{
    assert (self);
    for (size_t i = 0; i < self->io_count; i++)
        if (self->ios[i] == io) {
            memmove (&self->ios[i], &self->ios[i + 1], (self->io_count - i - 1) * sizeof (prt_io_t *));
            self->io_count--;
            return;
        }
}

int prt_every (prt_t *self, int64_t interval_ms, prt_timer_fn *fn, void *arg)
{
    assert (self);
    self->timers = pgrow (self->timers, &self->timer_capacity, self->timer_count + 1,
                          sizeof (s_timer_t));
    if (interval_ms < 1)
        interval_ms = 1;
    self->timers[self->timer_count] = (s_timer_t) {self->now + interval_ms, interval_ms, fn, arg};
    return (int) self->timer_count++;
}

void prt_timer_next (prt_t *self, int id, int64_t at)
{
    assert (self);
    if (id >= 0 && (size_t) id < self->timer_count)
        self->timers[id].next = at;
}

void prt_timer_interval (prt_t *self, int id, int64_t interval_ms)
{
    assert (self);
    if (id >= 0 && (size_t) id < self->timer_count && interval_ms > 0) {
        s_timer_t *t = &self->timers[id];
        //  The next run moves with the new pace, but never later than it was.
        int64_t next = self->now + interval_ms;
        if (next < t->next)
            t->next = next;
        t->interval = interval_ms;
    }
}

int64_t prt_now (prt_t *self)
{
    return self->now;
}

int64_t prt_clock (prt_t *self)
{
    int64_t now = zclock_time ();
    if (now > self->now)
        self->now = now;
    return self->now;
}

bool prt_draining (prt_t *self)
{
    return self->draining;
}

void prt_stop (prt_t *self)
{
    self->stopping = true;
}

void prt_again (prt_t *self)
{
    self->again = true;
}

void prt_stats (prt_t *self, prt_stats_t *stats)
{
    *stats = self->stats;
}

//  Fills self->items; returns the count, and each plugin's first item and count.
static size_t s_build_items (prt_t *self, size_t *io_first, int *io_count)
{
    size_t n = 1 + self->reader_count;
    self->items = pgrow (self->items, &self->item_capacity, n + 16, sizeof (zmq_pollitem_t));
    self->items[0] = (zmq_pollitem_t) {zsock_resolve (self->pipe), 0, ZMQ_POLLIN, 0};
    for (size_t i = 0; i < self->reader_count; i++)
        self->items[1 + i] = (zmq_pollitem_t) {zsock_resolve (self->readers[i].sock), 0, ZMQ_POLLIN, 0};
    for (size_t i = 0; i < self->io_count; i++) {
        prt_io_t *io = self->ios[i];
        int room = (int) (self->item_capacity - n);
        int k = io->pollitems ? io->pollitems (io, self->items + n, room) : 0;
        if (k > room) {
            self->items = pgrow (self->items, &self->item_capacity, n + (size_t) k, sizeof (zmq_pollitem_t));
            k = io->pollitems (io, self->items + n, k);
        }
        io_first[i] = n;
        io_count[i] = k < 0 ? 0 : k;
        n += (size_t) io_count[i];
    }
    return n;
}

static int64_t s_next_deadline (prt_t *self)
{
    int64_t at = self->now + MAX_WAIT_MS;
    for (size_t i = 0; i < self->timer_count; i++)
        if (self->timers[i].next < at)
            at = self->timers[i].next;
    for (size_t i = 0; i < self->io_count; i++)
        if (self->ios[i]->wakeup) {
            int64_t w = self->ios[i]->wakeup (self->ios[i], self->now);
            if (w < at)
                at = w;
        }
    if (self->hooks.wakeup) {
        int64_t w = self->hooks.wakeup (self->owner, self->now);
        if (w < at)
            at = w;
    }
    return at;
}

static void s_read_pipe (prt_t *self)
{
    char *command = zstr_recv (self->pipe);
    bool term = !command || streq (command, "$TERM");
    zstr_free (&command);
    if (term && !self->draining) {
        self->draining = true;
        if (self->hooks.term)
            self->hooks.term (self->owner, self->now);
        else
            self->stopping = true;
    }
}

int prt_run (prt_t *self)
{
    assert (self);
    size_t *io_first = NULL;
    int *io_count = NULL;
    size_t io_room = 0;
    int rc = 0;
    while (!self->stopping) {
        prt_clock (self);
        if (self->io_count > io_room) {
            io_room = self->io_count;
            io_first = prealloc (io_first, io_room * sizeof (size_t));
            io_count = prealloc (io_count, io_room * sizeof (int));
        }
        size_t n = s_build_items (self, io_first, io_count);
        int64_t wait = self->again ? 0 : s_next_deadline (self) - self->now;
        self->again = false;
        if (wait < 0)
            wait = 0;
        if (zmq_poll (self->items, (int) n, (long) wait) == -1) {
            if (zmq_errno () == EINTR)
                continue;   //  a signal: the pipe brings $TERM
            plog_error ("zmq_poll failed: %s", zmq_strerror (zmq_errno ()));
            rc = -1;
            break;
        }
        int64_t started = zclock_mono ();
        prt_clock (self);
        self->stats.turns++;
        //  Read.
        if (self->items[0].revents & ZMQ_POLLIN)
            s_read_pipe (self);
        for (size_t i = 0; i < self->reader_count; i++)
            if (self->items[1 + i].revents & ZMQ_POLLIN) {
                s_reader_t *r = &self->readers[i];
                if (r->fn (r->arg, r->sock, PRT_BATCH) >= PRT_BATCH)
                    self->again = true;
            }
        for (size_t i = 0; i < self->io_count && i < io_room; i++) {
            prt_io_t *io = self->ios[i];
            if (io->process)
                io->process (io, self->now, self->items + io_first[i], io_count[i]);
        }
        //  Apply: timers, then the daemon's decisions.
        for (size_t i = 0; i < self->timer_count; i++) {
            s_timer_t *t = &self->timers[i];
            if (t->next <= self->now) {
                t->next = self->now + t->interval;
                t->fn (t->arg, self->now);
            }
        }
        if (self->hooks.apply)
            self->hooks.apply (self->owner, self->now);
        //  Commit, then send what waited for it.
        if (self->hooks.commit && self->hooks.commit (self->owner)) {
            rc = -1;
            break;
        }
        if (self->hooks.send)
            self->hooks.send (self->owner, self->now);
        int64_t took = zclock_mono () - started;
        if (took > self->stats.longest_turn_ms)
            self->stats.longest_turn_ms = took;
    }
    free (io_first);
    free (io_count);
    return rc;
}
