/*  proto_sock - socket factory. See proto_sock.h. */
#include "proto/proto_sock.h"
#include "common/plog.h"

void proto_net_defaults (proto_net_t *net)
{
    net->hwm = 200000;
    net->max_frame_bytes = 4 * 1024 * 1024;
    net->heartbeat_ms = 1000;
    net->linger_ms = 1000;
}

zsock_t *proto_sock_new (const proto_net_t *net, int type, const char *endpoint, bool bind,
                         const char *identity)
{
    zsock_t *sock = zsock_new (type);
    if (!sock) {
        plog_error ("cannot create socket: %s", zmq_strerror (zmq_errno ()));
        return NULL;
    }
    zsock_set_sndhwm (sock, net->hwm);
    zsock_set_rcvhwm (sock, net->hwm);
    zsock_set_maxmsgsize (sock, net->max_frame_bytes);
    zsock_set_linger (sock, net->linger_ms);
    //  Reconnect quickly after a peer restarts, but do not hammer a dead one.
    zsock_set_reconnect_ivl (sock, 100);
    zsock_set_reconnect_ivl_max (sock, 2000);
    //  ZMTP heartbeats find half-open TCP connections (a peer's machine died).
    zsock_set_heartbeat_ivl (sock, net->heartbeat_ms);
    zsock_set_heartbeat_timeout (sock, net->heartbeat_ms * 3);
    zsock_set_heartbeat_ttl (sock, net->heartbeat_ms * 3);
    if (type == ZMQ_ROUTER) {
        //  A reconnecting peer with the same identity takes over its route,
        //  and sending to a vanished peer fails loudly instead of silently.
        zsock_set_router_handover (sock, 1);
        zsock_set_router_mandatory (sock, 1);
    }
    if (identity && (type == ZMQ_DEALER || type == ZMQ_ROUTER))
        zsock_set_identity (sock, identity);
    int rc = bind ? zsock_bind (sock, "%s", endpoint) : zsock_connect (sock, "%s", endpoint);
    if (rc == -1) {
        plog_error ("cannot %s %s: %s", bind ? "bind" : "connect to", endpoint,
                    zmq_strerror (zmq_errno ()));
        zsock_destroy (&sock);
        return NULL;
    }
    return sock;
}

char *proto_sock_endpoint (zsock_t *sock)
{
    return zsock_last_endpoint (sock);
}
