/*  parley-sink - posts replies and publishes the pipeline's live stats. */
#include "common/pdaemon.h"
#include "net/phttp.h"
#include "proto/proto_auth.h"
#include "sink/sink.h"

int main (int argc, char **argv)
{
    static const pdaemon_info_t info = {
        "parley-sink", "sink",
        "The Parley sink: collects written replies, posts each one at most once to\n"
        "its destination, reports outcomes to the broker, and publishes the live\n"
        "stats feed of the whole pipeline.",
        "Endpoints: network.sinkResults (workers push here) and network.statsPublish\n"
        "(subscribe here, e.g. with `parleyctl top`).",
        proto_auth_start, proto_auth_stop};
    pdaemon_t daemon;
    pdaemon_start (&daemon, &info, argc, argv);
    phttp_global_init ();   //  before the actor thread exists (see phttp.h)
    sink_args_t args = {daemon.config, daemon.ready_file};
    int status = pdaemon_run_actor (sink_server, &args);
    pdaemon_finish (&daemon);
    return status;
}
