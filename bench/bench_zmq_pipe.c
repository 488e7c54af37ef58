/*  bench_zmq_pipe - one process of a raw ZeroMQ pipeline, for bench/run.

    Usage: bench_zmq_pipe source OUT JOBS SIZE
           bench_zmq_pipe stage IN OUT JOBS
           bench_zmq_pipe sink IN JOBS

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

static void s_ready (void)
{
    printf ("ready\n");
    fflush (stdout);
}

int main (int argc, char *argv[])
{
    void *ctx = zmq_ctx_new ();
    if (argc == 5 && strcmp (argv[1], "source") == 0) {
        void *out = s_socket (ctx, ZMQ_PUSH, argv[2], 0);
        long jobs = atol (argv[3]);
        size_t size = (size_t) atol (argv[4]);
        char *body = calloc (1, size + 24);
        memset (body, 'x', size);
        for (long i = 0; i < jobs; i++) {
            int t = snprintf (body, 24, "%ld ", i);
            body[t] = 'x';
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
    else if (argc == 4 && strcmp (argv[1], "sink") == 0) {
        void *in = s_socket (ctx, ZMQ_PULL, argv[2], 1);
        long jobs = atol (argv[3]);
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
        }
        zmq_msg_close (&msg);
        zmq_close (in);
        printf ("{\"jobs\": %ld, \"first_ns\": %lld, \"last_ns\": %lld}\n", jobs,
                (long long) first, (long long) last);
    }
    else {
        fprintf (stderr, "usage: bench_zmq_pipe source OUT JOBS SIZE | stage IN OUT JOBS | sink IN JOBS\n");
        return 2;
    }
    zmq_ctx_term (ctx);
    return 0;
}
