/*  parley-poller - finds new chat messages and submits jobs for them. */
#include "common/pdaemon.h"
#include "net/phttp.h"
#include "poller/poller.h"

int main (int argc, char **argv)
{
    static const pdaemon_info_t info = {
        "parley-poller", "poller",
        "The Parley poller: reads chat sources, picks which entities answer each\n"
        "message, and submits the jobs to the broker.",
        "Sources are configured in poller.sources; for example, to read JSON lines\n"
        "from standard input:\n"
        "  parley-poller --set 'poller.sources=[{\"name\":\"in\",\"type\":\"jsonl\",\"path\":\"-\"}]'"};
    pdaemon_t daemon;
    pdaemon_start (&daemon, &info, argc, argv);
    phttp_global_init ();   //  before the actor thread exists (see phttp.h)
    poller_args_t args = {daemon.config, daemon.ready_file};
    int status = pdaemon_run_actor (poller_server, &args);
    pdaemon_finish (&daemon);
    return status;
}
