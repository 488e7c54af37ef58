/*  bench_latency - time from SUBMIT to posted, for bench/run.

    Usage: bench_latency FRONTEND FIFO COUNT [RATE] [WARMUP]

    Submits jobs to the broker at FRONTEND as a poller does (one DEALER
    socket, SUBMIT frames of JOB_SPECs carrying a MESSAGE record that
    mentions entity "e0") and reads FIFO, the named pipe the sink's jsonl
    destination writes to, for the line of each job. A job's latency runs
    from this process's CLOCK_MONOTONIC just before its SUBMIT is sent to
    the moment its line is read from the pipe.

    RATE 0 (the default): one job in flight; the next is sent when the line
    of the last one has been read. RATE > 0: jobs are due at RATE per second
    whatever happens to earlier ones (open loop), and a job's latency runs
    from the time it was due, so a probe that falls behind counts against
    the system, not in its favour. The first WARMUP jobs (default COUNT/20)
    are not counted. Lines of other jobs in the pipe (a background load)
    are skipped.

    Prints "ready" once the pipe and the socket are open, waits for a line on
    standard input (reading the pipe meanwhile), runs, and prints one JSON line: count, lost, p50, p90,
    p99, max and mean in microseconds.
*/
#include "proto/proto.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define KEY_PREFIX "bench/lat/"

typedef struct {
    void *dealer;
    int fifo;
    char buf[1 << 16];
    size_t len;
    int64_t *sent_ns;       //  per job: when it was sent (or due); 0 = not yet
    int64_t *latency_ns;    //  per job: -1 until its line is read
    long count;
    long arrived;
    uint64_t seq;
} probe_t;

static int64_t s_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t s_wall_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static const char *s_lines[] = {"how do you stay motivated on mondays",
                                "can someone explain quantum entanglement simply",
                                "what's the most underrated movie ever",
                                "best sci-fi book you've read this year?"};

//  One SUBMIT with jobs [from, to).
static void s_submit (probe_t *self, long from, long to)
{
    size_t n = (size_t) (to - from);
    proto_job_spec_t *items = calloc (n, sizeof *items);
    char (*keys)[64] = calloc (n, sizeof *keys);
    uint8_t **payloads = calloc (n, sizeof *payloads);
    uint64_t now_ms = s_wall_ms ();
    for (size_t i = 0; i < n; i++) {
        long job = from + (long) i;
        char ref[24], text[96];
        snprintf (ref, sizeof ref, "%ld", job);
        snprintf (text, sizeof text, "@e0 %s", s_lines[job % 4]);
        snprintf (keys[i], sizeof keys[i], KEY_PREFIX "%ld", job);
        proto_message_t message = {"bench", "lat", ref, "quietfox7", "u7", text, now_ms,
                                   PROTO_MSG_MENTION, NULL, 0};
        size_t size;
        if (proto_message_encode (&message, &payloads[i], &size)) {
            fprintf (stderr, "bench_latency: cannot encode a message\n");
            exit (1);
        }
        items[i] = (proto_job_spec_t) {keys[i], "e0", "bench/lat", "group", 10, now_ms,
                                       {payloads[i], (uint32_t) size}};
    }
    proto_submit_t submit = {++self->seq, items, n};
    zmq_msg_t frame;
    if (proto_encode (PROTO_SUBMIT, &submit, &frame)) {
        fprintf (stderr, "bench_latency: cannot encode a SUBMIT\n");
        exit (1);
    }
    if (zmq_msg_send (&frame, self->dealer, 0) < 0) {
        fprintf (stderr, "bench_latency: send: %s\n", zmq_strerror (zmq_errno ()));
        exit (1);
    }
    for (size_t i = 0; i < n; i++)
        free (payloads[i]);
    free (payloads);
    free (keys);
    free (items);
}

//  ACKs are not needed (nothing is resent: the broker is on this machine);
//  they are drained so they do not pile up.
static void s_drain_acks (probe_t *self)
{
    zmq_msg_t msg;
    zmq_msg_init (&msg);
    while (zmq_msg_recv (&msg, self->dealer, ZMQ_DONTWAIT) >= 0)
        ;
    zmq_msg_close (&msg);
}

static void s_line (probe_t *self, const char *line, size_t len, int64_t now)
{
    const char *at = memmem (line, len, "\"msg_key\":", 10);
    if (!at)
        return;
    at += 10;
    while (*at == ' ' || *at == '"')
        at++;
    if (strncmp (at, KEY_PREFIX, strlen (KEY_PREFIX)) != 0)
        return;     //  a job of the background load
    long job = strtol (at + strlen (KEY_PREFIX), NULL, 10);
    if (job < 0 || job >= self->count || self->latency_ns[job] >= 0 || !self->sent_ns[job])
        return;
    self->latency_ns[job] = now - self->sent_ns[job];
    self->arrived++;
}

//  Waits until the pipe has data or `until_ns` (0: up to 10 s), and
//  handles every whole line in it.
static void s_read (probe_t *self, int64_t until_ns)
{
    int64_t now = s_now_ns ();
    int64_t wait = until_ns ? until_ns - now : 10000000000LL;
    if (wait < 0)
        wait = 0;
    struct pollfd p = {self->fifo, POLLIN, 0};
    struct timespec ts = {wait / 1000000000, wait % 1000000000};
    if (ppoll (&p, 1, &ts, NULL) <= 0)
        return;
    ssize_t n = read (self->fifo, self->buf + self->len, sizeof self->buf - self->len);
    now = s_now_ns ();
    if (n <= 0)
        return;
    self->len += (size_t) n;
    char *start = self->buf, *end;
    while ((end = memchr (start, '\n', self->len - (size_t) (start - self->buf)))) {
        s_line (self, start, (size_t) (end - start), now);
        start = end + 1;
    }
    self->len -= (size_t) (start - self->buf);
    memmove (self->buf, start, self->len);
    if (self->len == sizeof self->buf)
        self->len = 0;      //  a line longer than the buffer is not ours
}

static int s_cmp (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

static double s_rank (const int64_t *sorted, long n, double p)
{
    long i = (long) ceil (p * (double) n) - 1;
    return (double) sorted[i < 0 ? 0 : i] / 1000.0;
}

int main (int argc, char *argv[])
{
    if (argc < 4) {
        fprintf (stderr, "usage: bench_latency FRONTEND FIFO COUNT [RATE] [WARMUP]\n");
        return 2;
    }
    probe_t self = {0};
    self.count = atol (argv[3]);
    double rate = argc > 4 ? atof (argv[4]) : 0;
    long warmup = argc > 5 ? atol (argv[5]) : self.count / 20;
    if (self.count <= warmup) {
        fprintf (stderr, "bench_latency: COUNT must exceed WARMUP\n");
        return 2;
    }
    //  Read and write: the pipe then never reports end of file, and the sink's
    //  open for writing does not wait for a reader.
    self.fifo = open (argv[2], O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (self.fifo < 0) {
        fprintf (stderr, "bench_latency: open %s: %s\n", argv[2], strerror (errno));
        return 1;
    }
    //  A pipe holds 64 KiB, a few milliseconds of lines at half load: a
    //  probe that loses the CPU for a moment would stop the sink's write()
    //  and measure itself. A larger one keeps the sink from waiting on it.
#ifdef F_SETPIPE_SZ
    if (fcntl (self.fifo, F_SETPIPE_SZ, 1 << 20) < 0)
        fprintf (stderr, "bench_latency: cannot enlarge the pipe: %s\n", strerror (errno));
#endif
    void *ctx = zmq_ctx_new ();
    self.dealer = zmq_socket (ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt (self.dealer, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect (self.dealer, argv[1])) {
        fprintf (stderr, "bench_latency: connect %s: %s\n", argv[1], zmq_strerror (zmq_errno ()));
        return 1;
    }
    self.sent_ns = calloc ((size_t) self.count, sizeof (int64_t));
    self.latency_ns = malloc ((size_t) self.count * sizeof (int64_t));
    for (long i = 0; i < self.count; i++)
        self.latency_ns[i] = -1;
    printf ("ready\n");
    fflush (stdout);
    //  Until "go", lines of a background load are read and skipped: a full
    //  pipe would stop the sink.
    while (true) {
        struct pollfd p[2] = {{self.fifo, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
        if (poll (p, 2, -1) < 0 && errno != EINTR)
            return 1;
        if (p[1].revents)
            break;
        if (p[0].revents)
            s_read (&self, s_now_ns ());
    }

    int64_t start = s_now_ns ();
    if (rate <= 0) {
        for (long i = 0; i < self.count; i++) {
            s_drain_acks (&self);
            self.sent_ns[i] = s_now_ns ();
            s_submit (&self, i, i + 1);
            int64_t deadline = s_now_ns () + 10000000000LL;
            while (self.latency_ns[i] < 0 && s_now_ns () < deadline)
                s_read (&self, deadline);
            if (self.latency_ns[i] < 0)
                break;      //  lost: reported below
        }
    }
    else {
        double interval = 1e9 / rate;
        long next = 0;
        while (next < self.count) {
            s_drain_acks (&self);
            int64_t now = s_now_ns ();
            long due = next;
            while (due < self.count && start + (int64_t) (interval * (double) due) <= now) {
                self.sent_ns[due] = start + (int64_t) (interval * (double) due);
                due++;
            }
            if (due > next)
                s_submit (&self, next, due);
            next = due;
            if (next < self.count)
                s_read (&self, start + (int64_t) (interval * (double) next));
        }
        int64_t deadline = s_now_ns () + 10000000000LL;
        while (self.arrived < self.count && s_now_ns () < deadline)
            s_read (&self, deadline);
    }

    //  BENCH_LATENCY_DUMP=FILE writes each job's send time (ms after the
    //  start) and latency (us), to look for a pattern in the slow ones.
    const char *dump = getenv ("BENCH_LATENCY_DUMP");
    FILE *df = dump ? fopen (dump, "w") : NULL;
    for (long i = 0; df && i < self.count; i++)
        fprintf (df, "%.3f %.1f\n", (double) (self.sent_ns[i] - start) / 1e6,
                 (double) self.latency_ns[i] / 1000.0);
    if (df)
        fclose (df);
    long n = 0;
    double sum = 0;
    int64_t *sorted = malloc ((size_t) self.count * sizeof (int64_t));
    for (long i = warmup; i < self.count; i++)
        if (self.latency_ns[i] >= 0) {
            sorted[n++] = self.latency_ns[i];
            sum += (double) self.latency_ns[i];
        }
    long lost = self.count - warmup - n;
    if (n == 0) {
        printf ("{\"count\": 0, \"lost\": %ld}\n", lost);
        return 1;
    }
    qsort (sorted, (size_t) n, sizeof *sorted, s_cmp);
    printf ("{\"count\": %ld, \"lost\": %ld, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
            "\"max_us\": %.1f, \"mean_us\": %.1f, \"seconds\": %.3f}\n",
            n, lost, s_rank (sorted, n, 0.50), s_rank (sorted, n, 0.90), s_rank (sorted, n, 0.99),
            (double) sorted[n - 1] / 1000.0, sum / (double) n / 1000.0,
            (double) (s_now_ns () - start) / 1e9);
    free (sorted);
    free (self.sent_ns);
    free (self.latency_ns);
    close (self.fifo);
    zmq_close (self.dealer);
    zmq_ctx_term (ctx);
    return lost ? 1 : 0;
}
