/*  source_jsonl - chat messages as JSON lines, from a file or standard input.

    One object per line:
        {"id": "m1", "chat": "lobby", "author": "ana", "text": "@Joker hi",
         "chatKind": "group", "authorId": "42", "ts": 1763900000000,
         "replyToAuthor": "Joker", "isBot": false}
    id, chat and text are required; ts (Unix ms, or seconds if small) defaults
    to now. chatKind "private" (or "dm", "direct") is a private chat, any
    other a group; without it the kind is left open (""). Ids and names are
    at most 200 bytes. A bad line is logged with its line number, counted
    and skipped.
    With "follow": true the file is watched as it grows.
*/
#include "poller/source.h"
#include "common/palloc.h"
#include "common/plog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MAX_LINE     (1 << 20)     //  longer lines are refused
#define FOLLOW_MS    200           //  how often a followed file is checked
#define MAX_ID       200           //  bytes in an id, chat or name
#define MAX_TIME     1e14          //  a ts (s or ms) past this is nonsense (and would overflow)

typedef struct {
    int fd;
    bool is_stdin;
    bool eof;
    bool skipping;          //  inside a line that was too long
    char *buf;
    size_t len;             //  bytes in buf
    size_t pos;             //  next unread byte
    uint64_t line_no;
    uint64_t offset;        //  file offset of buf[0]
    int64_t next_check;     //  followed file at its end: when to look for more
    char cursor[32];
    plog_limiter_t log;
} jsonl_t;

static const char *s_field_string (json_t *obj, const char *key, char *buf, size_t len)
{
    return source_json_scalar (json_object_get (obj, key), buf, len);
}

static void s_bad_line (source_t *self, jsonl_t *j, const char *what)
{
    self->errors++;
    if (plog_limiter_allow (&j->log, 20))
        plog_warn ("source %s: %s line %llu: %s; skipped", self->config->name, self->config->path,
                   (unsigned long long) j->line_no, what);
}

//  Parses one line and emits it. Returns false if the poller refused it.
static bool s_line (source_t *self, jsonl_t *j, char *line, size_t n, int64_t now,
                    source_emit_fn *emit, void *ctx)
{
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
        n--;
    if (n == 0)
        return true;
    json_error_t err;
    json_t *obj = json_loadb (line, n, JSON_REJECT_DUPLICATES, &err);
    if (!obj) {
        char what[300];
        snprintf (what, sizeof what, "not JSON (column %d: %s)", err.column, err.text);
        s_bad_line (self, j, what);
        return true;
    }
    char idbuf[32], chatbuf[32], authorbuf[32];
    const char *id = s_field_string (obj, "id", idbuf, sizeof idbuf);
    const char *chat = s_field_string (obj, "chat", chatbuf, sizeof chatbuf);
    const char *author = s_field_string (obj, "author", authorbuf, sizeof authorbuf);
    const char *author_id = json_string_value (json_object_get (obj, "authorId"));
    json_t *text = json_object_get (obj, "text");
    json_t *ts = json_object_get (obj, "ts");
    //  Longer ids or names would break the protocol's bounds in the job (its
    //  key, "source/chat/id", travels in every frame about it).
    const char *problem = !json_is_object (obj)         ? "not a JSON object"
                          : !id || !*id                 ? "\"id\" is missing or not a string"
                          : !chat || !*chat             ? "\"chat\" is missing or not a string"
                          : !json_is_string (text)      ? "\"text\" is missing or not a string"
                          : ts && !json_is_number (ts)  ? "\"ts\" is not a number"
                          : ts && !(json_number_value (ts) > -MAX_TIME
                                    && json_number_value (ts) < MAX_TIME)
                              ? "\"ts\" is not a time"
                          : strlen (id) > MAX_ID        ? "\"id\" is longer than 200 bytes"
                          : strlen (chat) > MAX_ID      ? "\"chat\" is longer than 200 bytes"
                          : author && strlen (author) > MAX_ID
                              ? "\"author\" is longer than 200 bytes"
                          : author_id && strlen (author_id) > MAX_ID
                              ? "\"authorId\" is longer than 200 bytes"
                              : NULL;
    if (problem) {
        s_bad_line (self, j, problem);
        json_decref (obj);
        return true;
    }
    int64_t when = ts ? (int64_t) json_number_value (ts) : now;
    if (ts && when < 100000000000LL)
        when *= 1000;   //  seconds
    const char *kind = json_string_value (json_object_get (obj, "chatKind"));
    if (kind && *kind)
        kind = strcasecmp (kind, "private") == 0 || strcasecmp (kind, "dm") == 0
                       || strcasecmp (kind, "direct") == 0
                   ? "private"
                   : "group";
    const char *reply_to = json_string_value (json_object_get (obj, "replyToAuthor"));
    if (reply_to && strlen (reply_to) > MAX_ID)
        reply_to = NULL;
    chat_msg_t msg = {id,
                      chat,
                      kind && *kind ? kind : "",
                      author ? author : "someone",
                      author_id,
                      json_string_value (text),
                      reply_to,
                      when,
                      json_is_true (json_object_get (obj, "isBot"))};
    if (!msg.author_id)
        msg.author_id = msg.author;
    bool taken = emit (ctx, self, &msg);
    json_decref (obj);
    return taken;
}

static void s_poll (source_t *self, int64_t now, int budget, source_emit_fn *emit, void *ctx)
{
    jsonl_t *j = self->state;
    while (budget > 0) {
        //  Whole lines in the buffer first.
        char *start = j->buf + j->pos;
        char *nl = memchr (start, '\n', j->len - j->pos);
        if (nl) {
            size_t n = (size_t) (nl - start);
            if (j->skipping) {
                j->skipping = false;
                j->pos += n + 1;
                continue;
            }
            j->line_no++;
            if (!s_line (self, j, start, n, now, emit, ctx)) {
                j->line_no--;
                return;     //  the poller is full: same line next time
            }
            j->pos += n + 1;
            budget--;
            continue;
        }
        if (j->eof)
            break;
        //  Need more bytes: compact, then read.
        j->offset += j->pos;
        memmove (j->buf, j->buf + j->pos, j->len - j->pos);
        j->len -= j->pos;
        j->pos = 0;
        if (j->len == MAX_LINE) {
            j->line_no++;
            s_bad_line (self, j, "line longer than 1 MiB");
            j->skipping = true;
            j->offset += j->len;
            j->len = 0;
        }
        ssize_t got = read (j->fd, j->buf + j->len, MAX_LINE - j->len);
        if (got > 0) {
            j->len += (size_t) got;
            continue;
        }
        if (got < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (got < 0)
            plog_error ("source %s: read error: %s", self->config->name, strerror (errno));
        if (got == 0 && self->config->follow && !j->is_stdin)
            j->next_check = now + FOLLOW_MS;
        if (!self->config->follow || j->is_stdin || got < 0) {
            //  End of input: a last line without a newline still counts.
            if (j->len > j->pos && !j->skipping) {
                j->line_no++;
                if (!s_line (self, j, j->buf + j->pos, j->len - j->pos, now, emit, ctx)) {
                    j->line_no--;
                    return;
                }
            }
            j->offset += j->len;
            j->len = j->pos = 0;
            j->eof = true;
            plog_info ("source %s: end of %s after %llu lines", self->config->name,
                       self->config->path, (unsigned long long) j->line_no);
        }
        break;
    }
}

static int64_t s_wakeup (prt_io_t *io, int64_t now)
{
    source_t *self = source_of (io);
    jsonl_t *j = self->state;
    if (j->eof)
        return PRT_NEVER;
    if (j->is_stdin)
        //  Lines already buffered are due now; otherwise stdin's fd wakes us.
        return memchr (j->buf + j->pos, '\n', j->len - j->pos) ? now : PRT_NEVER;
    //  A regular file is always readable; a followed file at its end is checked now and then.
    return self->config->follow && j->next_check > now ? j->next_check : now;
}

static int s_pollitems (prt_io_t *io, zmq_pollitem_t *items, int max)
{
    source_t *self = source_of (io);
    jsonl_t *j = self->state;
    if (!j->is_stdin || j->eof || max < 1)
        return 0;
    items[0] = (zmq_pollitem_t) {NULL, j->fd, ZMQ_POLLIN, 0};
    return 1;
}

static bool s_finished (source_t *self)
{
    return ((jsonl_t *) self->state)->eof;
}

//  The cursor is the byte offset of the first line not yet emitted.
static const char *s_cursor (source_t *self)
{
    jsonl_t *j = self->state;
    if (j->is_stdin)
        return NULL;    //  a pipe cannot be re-read
    snprintf (j->cursor, sizeof j->cursor, "%llu", (unsigned long long) (j->offset + j->pos));
    return j->cursor;
}

static void s_committed (source_t *self, const char *cursor)
{
    (void) self, (void) cursor;
}

static void s_restore (source_t *self, const char *cursor)
{
    jsonl_t *j = self->state;
    if (j->is_stdin)
        return;
    off_t at = (off_t) strtoull (cursor, NULL, 10);
    if (lseek (j->fd, at, SEEK_SET) == at) {
        j->offset = (uint64_t) at;
        j->len = j->pos = 0;
        plog_info ("source %s: resuming %s at byte %lld", self->config->name, self->config->path,
                   (long long) at);
    }
}

static void s_destroy (source_t *self)
{
    jsonl_t *j = self->state;
    if (!j->is_stdin && j->fd >= 0)
        close (j->fd);
    free (j->buf);
    free (j);
}

int source_jsonl_init (source_t *self)
{
    jsonl_t *j = pcalloc (1, sizeof *j);
    const char *path = self->config->path;
    j->is_stdin = strcmp (path, "-") == 0;
    j->fd = j->is_stdin ? STDIN_FILENO : open (path, O_RDONLY | O_CLOEXEC);
    if (j->fd < 0) {
        plog_error ("source %s: cannot open %s: %s", self->config->name, path, strerror (errno));
        free (j);
        return -1;
    }
    if (j->is_stdin)
        fcntl (j->fd, F_SETFL, fcntl (j->fd, F_GETFL) | O_NONBLOCK);
    j->buf = pmalloc (MAX_LINE + 1);
    self->state = j;
    self->poll = s_poll;
    self->io.wakeup = s_wakeup;
    self->io.pollitems = s_pollitems;
    self->finished = s_finished;
    self->cursor = s_cursor;
    self->committed = s_committed;
    self->restore = s_restore;
    self->destroy = s_destroy;
    return 0;
}
