/*  proto_sock - socket factory. See proto_sock.h. */
#include "proto/proto_sock.h"
#include "common/plog.h"
#include "proto/proto.h"

#include <string.h>

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

//  --- whole messages ----------------------------------------------------------------

int proto_send_frame (zsock_t *sock, const void *route, size_t route_size, zmq_msg_t *frame)
{
    void *handle = zsock_resolve (sock);
    if (route && zmq_send (handle, route, route_size, ZMQ_SNDMORE | ZMQ_DONTWAIT) == -1) {
        zmq_msg_close (frame);
        return -1;
    }
    if (zmq_msg_send (frame, handle, ZMQ_DONTWAIT) == -1) {
        //  With a route already sent, ZeroMQ drops the half message itself.
        zmq_msg_close (frame);
        return -1;
    }
    return 0;
}

int proto_send (zsock_t *sock, proto_type_t type, const void *body)
{
    zmq_msg_t frame;
    if (proto_encode (type, body, &frame))
        return -1;
    return proto_send_frame (sock, NULL, 0, &frame);
}

int proto_send_to (zsock_t *sock, const void *route, size_t route_size, proto_type_t type,
                   const void *body)
{
    zmq_msg_t frame;
    if (proto_encode (type, body, &frame))
        return -1;
    return proto_send_frame (sock, route, route_size, &frame);
}

//  Discards the rest of a multi-part message.
static void s_drain_parts (void *handle)
{
    int more = 1;
    while (more) {
        zmq_msg_t junk;
        zmq_msg_init (&junk);
        if (zmq_msg_recv (&junk, handle, 0) == -1) {
            zmq_msg_close (&junk);
            return;
        }
        more = zmq_msg_more (&junk);
        zmq_msg_close (&junk);
    }
}

int proto_recv (zsock_t *sock, proto_msg_t *msg, proto_peer_t *peer, char *why, size_t whylen)
{
    void *handle = zsock_resolve (sock);
    proto_peer_t scratch;
    if (!peer)
        peer = &scratch;
    peer->route_size = 0;
    peer->user[0] = 0;
    memset (msg, 0, sizeof *msg);
    zmq_msg_t part;
    zmq_msg_init (&part);
    if (zmq_msg_recv (&part, handle, ZMQ_DONTWAIT) == -1) {
        zmq_msg_close (&part);
        return PROTO_NONE;
    }
    if (zsock_type (sock) == ZMQ_ROUTER) {
        size_t n = zmq_msg_size (&part);
        if (n > sizeof peer->route)
            n = sizeof peer->route;
        memcpy (peer->route, zmq_msg_data (&part), n);
        peer->route_size = n;
        bool more = zmq_msg_more (&part);
        zmq_msg_close (&part);
        if (!more) {
            snprintf (why, whylen, "no body after the routing id");
            return PROTO_MALFORMED;
        }
        zmq_msg_init (&part);
        if (zmq_msg_recv (&part, handle, 0) == -1) {
            zmq_msg_close (&part);
            snprintf (why, whylen, "body could not be read: %s", zmq_strerror (zmq_errno ()));
            return PROTO_MALFORMED;
        }
    }
    const char *user = zmq_msg_gets (&part, "User-Id");
    if (user)
        snprintf (peer->user, sizeof peer->user, "%s", user);
    int rc;
    if (zmq_msg_more (&part)) {
        //  Every Parley message is one frame.
        s_drain_parts (handle);
        snprintf (why, whylen, "a message of several frames (Parley messages are one frame)");
        rc = PROTO_MALFORMED;
    }
    else
        rc = proto_decode (zmq_msg_data (&part), zmq_msg_size (&part), msg, why, whylen);
    zmq_msg_close (&part);
    return rc;
}

const char *proto_peer_name (const proto_peer_t *peer, char *buf, size_t len)
{
    if (*peer->user) {
        snprintf (buf, len, "%s", peer->user);
        return buf;
    }
    size_t n = 0;
    buf[0] = 0;
    for (size_t i = 0; i < peer->route_size && n + 3 < len && i < 24; i++) {
        uint8_t c = peer->route[i];
        //  Routing ids Parley sets are printable; others show as hex.
        if (c >= 0x20 && c < 0x7f && c != '\\')
            buf[n++] = (char) c;
        else
            n += (size_t) snprintf (buf + n, len - n, "\\x%02x", c);
    }
    if (n < len)
        buf[n] = 0;
    return buf;
}
