/*  sse - reads a server-sent events stream. See sse.h.

    Follows the WHATWG event-stream rules that matter to LLM servers: a line
    is "field: value" (one space after the colon is dropped), data lines
    accumulate, a blank line dispatches the event.
*/
#include "worker/sse.h"
#include "common/palloc.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *data;
    size_t len, cap;
} s_buf_t;

struct sse_s {
    sse_event_fn *on_event;
    void *arg;
    s_buf_t line;           //  the line being read
    s_buf_t data;           //  data lines of the event being read
    bool has_data;
    char event[64];         //  type of the event being read
    bool after_cr;          //  the last byte was CR: a following LF ends nothing
    const char *error;
};

static int s_append (s_buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *grown = prealloc (b->data, cap);
        if (!grown)
            return -1;
        b->data = grown;
        b->cap = cap;
    }
    memcpy (b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

static int s_dispatch (sse_t *self)
{
    int rc = 0;
    if (self->has_data) {
        rc = self->on_event (self->arg, *self->event ? self->event : "message",
                             self->data.data ? self->data.data : "", self->data.len);
        if (rc)
            self->error = "stopped by the reader";
    }
    self->data.len = 0;
    if (self->data.data)
        self->data.data[0] = 0;
    self->has_data = false;
    self->event[0] = 0;
    return rc ? -1 : 0;
}

//  One complete line, without its end.
static int s_line (sse_t *self, const char *line, size_t len)
{
    if (len == 0)
        return s_dispatch (self);
    if (line[0] == ':')
        return 0;   //  a comment, e.g. a keep-alive
    const char *colon = memchr (line, ':', len);
    size_t name_len = colon ? (size_t) (colon - line) : len;
    const char *value = colon ? colon + 1 : line + len;
    size_t value_len = colon ? len - name_len - 1 : 0;
    if (value_len && *value == ' ')
        value++, value_len--;
    if (name_len == 4 && !memcmp (line, "data", 4)) {
        if (self->has_data && s_append (&self->data, "\n", 1))
            goto nomem;
        if (s_append (&self->data, value, value_len))
            goto nomem;
        self->has_data = true;
    }
    else if (name_len == 5 && !memcmp (line, "event", 5)) {
        size_t n = value_len < sizeof self->event - 1 ? value_len : sizeof self->event - 1;
        memcpy (self->event, value, n);
        self->event[n] = 0;
    }
    return 0;   //  id:, retry: and unknown fields mean nothing to us
nomem:
    self->error = "out of memory";
    return -1;
}

int sse_feed (sse_t *self, const char *data, size_t size)
{
    assert (self);
    if (self->error)
        return -1;
    const char *p = data, *end = data + size;
    while (p < end) {
        if (self->after_cr && *p == '\n') {
            p++;
            self->after_cr = false;
            continue;
        }
        self->after_cr = false;
        const char *eol = p;
        while (eol < end && *eol != '\n' && *eol != '\r')
            eol++;
        if (self->line.len + (size_t) (eol - p) > SSE_MAX_LINE) {
            self->error = "line longer than 1 MiB";
            return -1;
        }
        if (eol == end) {
            //  An unfinished line: keep it for the next piece.
            if (s_append (&self->line, p, (size_t) (eol - p))) {
                self->error = "out of memory";
                return -1;
            }
            break;
        }
        int rc;
        if (self->line.len) {
            if (s_append (&self->line, p, (size_t) (eol - p))) {
                self->error = "out of memory";
                return -1;
            }
            rc = s_line (self, self->line.data, self->line.len);
            self->line.len = 0;
        }
        else
            rc = s_line (self, p, (size_t) (eol - p));
        if (rc)
            return -1;
        self->after_cr = *eol == '\r';
        p = eol + 1;
    }
    return 0;
}

int sse_finish (sse_t *self)
{
    assert (self);
    if (self->error)
        return -1;
    if (self->line.len) {
        int rc = s_line (self, self->line.data, self->line.len);
        self->line.len = 0;
        if (rc)
            return -1;
    }
    return s_dispatch (self);
}

const char *sse_error (sse_t *self)
{
    assert (self);
    return self->error;
}

sse_t *sse_new (sse_event_fn *on_event, void *arg)
{
    sse_t *self = pcalloc (1, sizeof *self);
    if (self) {
        self->on_event = on_event;
        self->arg = arg;
    }
    return self;
}

void sse_destroy (sse_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sse_t *self = *self_p;
    free (self->line.data);
    free (self->data.data);
    free (self);
    *self_p = NULL;
}
