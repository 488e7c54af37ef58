/*  parley-worker - writes replies with an LLM (or the built-in templates). */
#include "common/pdaemon.h"
#include "common/plog.h"
#include "net/phttp.h"
#include "worker/worker.h"

#include <sys/resource.h>

//  Every LLM call in flight holds a socket: allow as many descriptors as
//  the system lets this process have, not the usual 1024.
static void s_raise_fd_limit (void)
{
    struct rlimit limit;
    if (getrlimit (RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        if (setrlimit (RLIMIT_NOFILE, &limit))
            plog_warn ("could not raise the open files limit; many calls in flight may fail");
    }
}

int main (int argc, char **argv)
{
    static const pdaemon_info_t info = {
        "parley-worker", "worker",
        "A Parley worker: takes jobs from the broker, writes the replies with the\n"
        "configured backend, and sends them to the sink. Run as many as you like,\n"
        "on any machine that reaches the broker and the sink.",
        "To join a broker on another machine:\n"
        "  PARLEY_BROKER_BACKEND=tcp://broker-host:7532 PARLEY_SINK_RESULTS=tcp://sink-host:7533 \\\n"
        "  WORKER_ID=gpu-box-1 parley-worker --config parley.json"};
    pdaemon_t daemon;
    pdaemon_start (&daemon, &info, argc, argv);
    s_raise_fd_limit ();
    phttp_global_init ();   //  before the actor thread exists (see phttp.h)
    worker_args_t args = {daemon.config, daemon.ready_file};
    int status = pdaemon_run_actor (worker_server, &args);
    pdaemon_finish (&daemon);
    return status;
}
