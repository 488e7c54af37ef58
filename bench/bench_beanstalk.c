/*  bench_beanstalk - a pipelined beanstalkd producer or consumer, for bench/run.

    Usage: bench_beanstalk produce PORT JOBS SIZE [WINDOW]
           bench_beanstalk consume PORT JOBS [WINDOW]

    The producer puts JOBS jobs of SIZE bytes; the consumer reserves and
    deletes them, the put -> reserve -> delete cycle of a beanstalkd worker.
    Both keep up to WINDOW commands in flight on one connection (default
    256), so the server, not the round trip, sets the pace. The consumer
    prints "ready" once connected, then one JSON line when all JOBS are
    deleted: the CLOCK_MONOTONIC times of the first and the last delete.

    beanstalkd's protocol is lines of text, so this speaks it over a socket:
        put <pri> <delay> <ttr> <bytes>\r\n<data>\r\n  ->  INSERTED <id>\r\n
        reserve\r\n                                    ->  RESERVED <id> <bytes>\r\n<data>\r\n
        delete <id>\r\n                                ->  DELETED\r\n
*/
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    char *out;          //  commands not yet written
    size_t out_len, out_cap;
    char *in;           //  replies not yet parsed
    size_t in_start, in_len, in_cap;
} conn_t;

static void s_die (const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    fprintf (stderr, "bench_beanstalk: ");
    vfprintf (stderr, fmt, ap);
    fprintf (stderr, "\n");
    va_end (ap);
    exit (1);
}

static int64_t s_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void s_connect (conn_t *c, int port)
{
    memset (c, 0, sizeof *c);
    c->fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons ((uint16_t) port)};
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    if (connect (c->fd, (struct sockaddr *) &addr, sizeof addr))
        s_die ("connect to port %d: %s", port, strerror (errno));
    int one = 1;
    setsockopt (c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->out_cap = c->in_cap = 1 << 20;
    c->out = malloc (c->out_cap);
    c->in = malloc (c->in_cap);
}

static void s_close (conn_t *c)
{
    close (c->fd);
    free (c->out);
    free (c->in);
}

static void s_append (conn_t *c, const char *data, size_t len)
{
    if (c->out_len + len > c->out_cap) {
        while (c->out_len + len > c->out_cap)
            c->out_cap *= 2;
        c->out = realloc (c->out, c->out_cap);
    }
    memcpy (c->out + c->out_len, data, len);
    c->out_len += len;
}

//  Writes what it can and reads what has come, waiting until one of them
//  moves. Reading and writing together: a server that cannot write its
//  replies stops reading commands, so a blocking write could deadlock.
static void s_pump (conn_t *c)
{
    struct pollfd p = {c->fd, POLLIN | (c->out_len ? POLLOUT : 0), 0};
    if (poll (&p, 1, 10000) <= 0)
        s_die ("no progress in 10 s");
    if (p.revents & POLLOUT) {
        ssize_t n = send (c->fd, c->out, c->out_len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN)
            s_die ("send: %s", strerror (errno));
        if (n > 0) {
            memmove (c->out, c->out + n, c->out_len - (size_t) n);
            c->out_len -= (size_t) n;
        }
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
        if (c->in_start > 0) {
            memmove (c->in, c->in + c->in_start, c->in_len);
            c->in_start = 0;
        }
        if (c->in_len == c->in_cap) {
            c->in_cap *= 2;
            c->in = realloc (c->in, c->in_cap);
        }
        ssize_t n = recv (c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
        if (n == 0)
            s_die ("the server closed the connection");
        if (n < 0 && errno != EAGAIN)
            s_die ("recv: %s", strerror (errno));
        if (n > 0)
            c->in_len += (size_t) n;
    }
}

//  The next whole reply line (its length without \r\n), or NULL until it has come.
static char *s_line (conn_t *c, size_t *line_len)
{
    char *start = c->in + c->in_start;
    char *end = memmem (start, c->in_len, "\r\n", 2);
    if (!end)
        return NULL;
    *line_len = (size_t) (end - start);
    return start;
}

static void s_consume (conn_t *c, size_t len)
{
    c->in_start += len;
    c->in_len -= len;
}

static int s_produce (int port, long jobs, long size, long window)
{
    conn_t c;
    s_connect (&c, port);
    char *body = malloc ((size_t) size + 2);
    memset (body, 'x', (size_t) size);
    memcpy (body + size, "\r\n", 2);
    long sent = 0, acked = 0;
    while (acked < jobs) {
        while (sent < jobs && sent - acked < window) {
            char head[64];
            //  Each job's body differs (its number first) like real payloads.
            int n = snprintf (head, sizeof head, "put 1024 0 60 %ld\r\n", size);
            s_append (&c, head, (size_t) n);
            char tag[24];
            int t = snprintf (tag, sizeof tag, "%ld ", sent);
            memcpy (body, tag, (size_t) (t < size ? t : size));
            s_append (&c, body, (size_t) size + 2);
            sent++;
        }
        s_pump (&c);
        size_t len;
        char *line;
        while ((line = s_line (&c, &len))) {
            if (strncmp (line, "INSERTED ", 9) != 0)
                s_die ("put answered %.*s", (int) len, line);
            s_consume (&c, len + 2);
            acked++;
        }
    }
    free (body);
    s_close (&c);
    return 0;
}

static int s_consume_jobs (int port, long jobs, long window)
{
    conn_t c;
    s_connect (&c, port);
    printf ("ready\n");
    fflush (stdout);
    //  Never more reserves than jobs: a reserve with none left would block
    //  the deletes queued behind it on the connection.
    long reserves = 0, reserved = 0, deleted = 0;
    int64_t first = 0, last = 0;
    while (deleted < jobs) {
        while (reserves < jobs && reserves - reserved < window) {
            s_append (&c, "reserve\r\n", 9);
            reserves++;
        }
        s_pump (&c);
        size_t len;
        char *line;
        while ((line = s_line (&c, &len))) {
            if (strncmp (line, "RESERVED ", 9) == 0) {
                unsigned long long id;
                long bytes;
                if (sscanf (line + 9, "%llu %ld", &id, &bytes) != 2)
                    s_die ("bad reply %.*s", (int) len, line);
                if (c.in_len < len + 2 + (size_t) bytes + 2)
                    break;     //  the body is still coming
                s_consume (&c, len + 2 + (size_t) bytes + 2);
                char cmd[48];
                int n = snprintf (cmd, sizeof cmd, "delete %llu\r\n", id);
                s_append (&c, cmd, (size_t) n);
                reserved++;
            }
            else if (len == 7 && memcmp (line, "DELETED", 7) == 0) {
                s_consume (&c, len + 2);
                last = s_now_ns ();
                if (deleted++ == 0)
                    first = last;
            }
            else
                s_die ("unexpected reply %.*s", (int) len, line);
        }
    }
    printf ("{\"jobs\": %ld, \"first_ns\": %lld, \"last_ns\": %lld}\n", jobs, (long long) first,
            (long long) last);
    s_close (&c);
    return 0;
}

int main (int argc, char *argv[])
{
    if (argc >= 5 && strcmp (argv[1], "produce") == 0)
        return s_produce (atoi (argv[2]), atol (argv[3]), atol (argv[4]),
                          argc > 5 ? atol (argv[5]) : 256);
    if (argc >= 4 && strcmp (argv[1], "consume") == 0)
        return s_consume_jobs (atoi (argv[2]), atol (argv[3]), argc > 4 ? atol (argv[4]) : 256);
    fprintf (stderr, "usage: bench_beanstalk produce PORT JOBS SIZE [WINDOW]\n"
                     "       bench_beanstalk consume PORT JOBS [WINDOW]\n");
    return 2;
}
