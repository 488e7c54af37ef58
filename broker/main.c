/*  parley-broker - decides what is answered, by whom and when. */
#include "broker/broker.h"
#include "common/pdaemon.h"
#include "common/plog.h"
#include "proto/proto_auth.h"

int main (int argc, char **argv)
{
    static const pdaemon_info_t info = {
        "parley-broker", "broker",
        "The Parley broker: queues jobs by priority, applies every rate limit and\n"
        "concurrency cap, hands jobs to workers, retries and dead-letters them.",
        "Endpoints: network.brokerFrontend (pollers, sinks, parleyctl) and\n"
        "network.brokerBackend (workers); bind elsewhere with *Bind or the\n"
        "PARLEY_BROKER_FRONTEND_BIND / PARLEY_BROKER_BACKEND_BIND variables.",
        proto_auth_start, proto_auth_stop};
    pdaemon_t daemon;
    pdaemon_start (&daemon, &info, argc, argv);
    broker_args_t args = {daemon.config, daemon.ready_file};
    int status = pdaemon_run_actor (broker_server, &args);
    pdaemon_finish (&daemon);
    return status;
}
