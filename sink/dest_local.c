/*  dest_local - the destination on this machine's terminal, stdout, and
    the no-op parts shared by destinations without sockets or timers. (The
    JSON-lines file is dest_jsonl.c.)

    stdout prints one readable line per reply (the demo's output):
        [demo/lounge] Philosopher -> @quietfox3: Consider this, ...
*/
#include "sink/dest.h"
#include "common/palloc.h"
#include "common/plog.h"
#include "net/ptext.h"

#include <stdio.h>
#include <stdlib.h>

int dest_no_pollitems (prt_io_t *io, zmq_pollitem_t *items, int max)
{
    (void) io, (void) items, (void) max;
    return 0;
}

void dest_no_process (prt_io_t *io, int64_t now, zmq_pollitem_t *items, int count)
{
    (void) io, (void) now, (void) items, (void) count;
}

int64_t dest_no_wakeup (prt_io_t *io, int64_t now)
{
    (void) io, (void) now;
    return PRT_NEVER;
}

//  The post is written: that is when it counts.
static void s_written (dest_t *self, void *tag, int64_t now)
{
    if (self->first)
        self->first (self->ctx, tag, now);
    self->done (self->ctx, tag, DEST_OK, NULL, 0);
}

//  --- stdout ----------------------------------------------------------------------

//  Local destinations have no platform limit; maxLength, if set, trims.
static char *s_text (dest_t *self, const dest_post_t *post)
{
    return ptext_trim (post->text, (size_t) self->config->max_length, PTEXT_CODEPOINTS);
}

static int s_stdout_post (dest_t *self, const dest_post_t *post, void *tag, int64_t now)
{
    char *text = s_text (self, post);
    printf ("[%s] %s -> @%s: %s\n", post->chat, post->entity_name, post->author, text);
    fflush (stdout);
    free (text);
    s_written (self, tag, now);
    return 0;
}

static int s_stdout_was_posted (dest_t *self, const char *msg_key, const char *entity_id)
{
    (void) self, (void) msg_key, (void) entity_id;
    return -1;  //  a terminal keeps no record
}

static void s_stdout_destroy (dest_t *self)
{
    (void) self;
}

int dest_stdout_init (dest_t *self)
{
    self->post = s_stdout_post;
    self->io.pollitems = dest_no_pollitems;
    self->io.process = dest_no_process;
    self->io.wakeup = dest_no_wakeup;
    self->was_posted = s_stdout_was_posted;
    self->destroy = s_stdout_destroy;
    return 0;
}
