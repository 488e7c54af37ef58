/*  bench_zmq_pipe - one process of a raw ZeroMQ pipeline, for bench/run.

    Usage: bench_zmq_pipe source OUT JOBS SIZE [PACE_US]
           bench_zmq_pipe stage IN OUT JOBS
           bench_zmq_pipe sink IN JOBS [latency]

    bench/run starts a sink, four stages and a source, each its own process:
    source -> stage -> stage -> stage -> stage -> sink, five PUSH/PULL hops
    over TCP on 127.0.0.1, the shape of Parley's pipeline without any of its
    work (no state, no decoding, no storage). Each process binds its PULL
    socket on IN and connects its PUSH socket to the next one's OUT. A stage
    forwards each message as it is (zero copy). What the sink measures is the
    ceiling of a pipeline of that shape on this machine.

    Every process except the source prints "ready" once bound; the sink then
    prints one JSON line when JOBS messages have arrived: the CLOCK_MONOTONIC
    times of the first and the last.

    With PACE_US the source sends one message every PACE_US microseconds
    (longer than a message takes through the pipeline, so one is in flight
    at a time), each carrying its CLOCK_MONOTONIC send time; a sink given
    "latency" adds the p50 and p99 of arrival minus send time. Through
    three hops (a source, two stages and a sink) that is the floor of
    Parley's latency at one job in flight (SUBMIT, JOB, RESULT: the broker
    pushes the verdict beside the JOB), with the same clock on both ends.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

static int64_t s_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *s_socket (void *ctx, int type, const char *endpoint, int bind)
{
    void *s = zmq_socket (ctx, type);
    int linger = 5000;
    zmq_setsockopt (s, ZMQ_LINGER, &linger, sizeof linger);
    if ((bind ? zmq_bind (s, endpoint) : zmq_connect (s, endpoint)) != 0) {
        fprintf (stderr, "bench_zmq_pipe: %s %s: %s\n", bind ? "bind" : "connect", endpoint,
                 zmq_strerror (zmq_errno ()));
        exit (1);
    }
    return s;
}

static int s_cmp (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

static void s_ready (void)
{
    printf ("ready\n");
    fflush (stdout);
}

int main (int argc, char *argv[])
{
    void *ctx = zmq_ctx_new ();
    if ((argc == 5 || argc == 6) && strcmp (argv[1], "source") == 0) {
        void *out = s_socket (ctx, ZMQ_PUSH, argv[2], 0);
        long jobs = atol (argv[3]);
        size_t size = (size_t) atol (argv[4]);
        int64_t pace_ns = argc == 6 ? atol (argv[5]) * 1000LL : 0;
        if (pace_ns > 0 && size < sizeof (int64_t))
            size = sizeof (int64_t);
        char *body = calloc (1, size + 24);
        memset (body, 'x', size);
        int64_t start = s_now_ns ();
        for (long i = 0; i < jobs; i++) {
            if (pace_ns > 0) {
                int64_t due = start + i * pace_ns;
                struct timespec ts = {(time_t) (due / 1000000000), (long) (due % 1000000000)};
                while (clock_nanosleep (CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0)
                    ;
                int64_t sent = s_now_ns ();
                memcpy (body, &sent, sizeof sent);
            }
            else {
                int t = snprintf (body, 24, "%ld ", i);
                body[t] = 'x';
            }
            if (zmq_send (out, body, size, 0) < 0)
                return 1;
        }
        free (body);
        zmq_close (out);    //  lingers until everything is sent
    }
    else if (argc == 5 && strcmp (argv[1], "stage") == 0) {
        void *in = s_socket (ctx, ZMQ_PULL, argv[2], 1);
        void *out = s_socket (ctx, ZMQ_PUSH, argv[3], 0);
        long jobs = atol (argv[4]);
        s_ready ();
        zmq_msg_t msg;
        zmq_msg_init (&msg);
        for (long i = 0; i < jobs; i++) {
            if (zmq_msg_recv (&msg, in, 0) < 0 || zmq_msg_send (&msg, out, 0) < 0)
                return 1;
        }
        zmq_msg_close (&msg);
        zmq_close (in);
        zmq_close (out);
    }
    else if ((argc == 4 || (argc == 5 && strcmp (argv[4], "latency") == 0))
             && strcmp (argv[1], "sink") == 0) {
        void *in = s_socket (ctx, ZMQ_PULL, argv[2], 1);
        long jobs = atol (argv[3]);
        int64_t *latency = argc == 5 && jobs > 0 ? calloc ((size_t) jobs, sizeof *latency) : NULL;
        s_ready ();
        zmq_msg_t msg;
        zmq_msg_init (&msg);
        int64_t first = 0, last = 0;
        for (long i = 0; i < jobs; i++) {
            if (zmq_msg_recv (&msg, in, 0) < 0)
                return 1;
            last = s_now_ns ();
            if (i == 0)
                first = last;
            if (latency && zmq_msg_size (&msg) >= sizeof (int64_t)) {
                int64_t sent;
                memcpy (&sent, zmq_msg_data (&msg), sizeof sent);
                latency[i] = last - sent;
            }
        }
        zmq_msg_close (&msg);
        zmq_close (in);
        printf ("{\"jobs\": %ld, \"first_ns\": %lld, \"last_ns\": %lld", jobs,
                (long long) first, (long long) last);
        if (latency) {
            qsort (latency, (size_t) jobs, sizeof *latency, s_cmp);
            printf (", \"p50_us\": %.1f, \"p99_us\": %.1f", (double) latency[jobs / 2] / 1000.0,
                    (double) latency[jobs * 99 / 100] / 1000.0);
            free (latency);
        }
        printf ("}\n");
    }
    else {
        fprintf (stderr, "usage: bench_zmq_pipe source OUT JOBS SIZE [PACE_US] | stage IN OUT JOBS | "
                 "sink IN JOBS [latency]\n");
        return 2;
    }
    zmq_ctx_term (ctx);
    return 0;
}
