/*  proto_sock - socket factory and transport policy. See proto_sock.h. */
#include "proto/proto_sock.h"
#include "common/plog.h"
#include "proto/proto.h"
#include "proto/proto_auth.h"

#include <arpa/inet.h>
#include <strings.h>
#include <string.h>

//  libzmq's ZMQ_ZAP_ENFORCE_DOMAIN (a draft name in zmq.h, but honoured by
//  libzmq 4.3): a CURVE server whose ZAP handler is missing refuses clients
//  instead of admitting them all.
#define PROTO_ZAP_ENFORCE_DOMAIN 93

void proto_net_defaults (proto_net_t *net)
{
    memset (net, 0, sizeof *net);
    net->hwm = 200000;
    net->max_frame_bytes = 4 * 1024 * 1024;
    net->heartbeat_ms = 1000;
    net->linger_ms = 1000;
}

//  Loads a pinned server key; "" stays "" when `required` is false.
static int s_load_pinned (const char *path, const char *setting, const char *role, bool required,
                          char key[PROTO_KEY_TXT])
{
    if (!path || !*path) {
        if (required)
            plog_error ("network.security is on but network.security.%s (PARLEY_%s) is not set:"
                        " a %s must know the public key of the server it connects to",
                        setting, streq (setting, "brokerKey") ? "BROKER_KEY" : "SINK_KEY", role);
        return required ? -1 : 0;
    }
    char why[1024];
    if (proto_keys_load_public (path, key, why, sizeof why)) {
        plog_error ("network.security.%s: %s", setting, why);
        return -1;
    }
    return 0;
}

int proto_net_from_config (proto_net_t *net, const pcfg_t *config, const char *role)
{
    proto_net_defaults (net);
    net->hwm = (int) config->hwm;
    net->max_frame_bytes = (int) config->max_frame_bytes;
    net->heartbeat_ms = (int) config->heartbeat_ms;
    net->insecure = config->insecure;
    net->secure = config->security;
    if (!net->secure)
        return 0;
    //  Which server keys each role must pin; other roles (parleyctl) load
    //  what is configured and are refused a socket whose key is missing.
    bool known = streq (role, "broker") || streq (role, "sink") || streq (role, "poller")
              || streq (role, "worker");
    bool need_broker = streq (role, "sink") || streq (role, "poller") || streq (role, "worker");
    bool need_sink = streq (role, "worker");
    char why[1024];
    int rc = 0;
    if (proto_keys_load_own (config->cert_path, net->public_key, net->secret_key, why,
                             sizeof why)) {
        plog_error ("network.security.certificate: %s", why);
        rc = -1;
    }
    if ((need_broker || !known)
        && s_load_pinned (config->broker_key, "brokerKey", role, need_broker, net->broker_key))
        rc = -1;
    if ((need_sink || !known)
        && s_load_pinned (config->sink_key, "sinkKey", role, need_sink, net->sink_key))
        rc = -1;
    if (rc) {
        memset (net->secret_key, 0, sizeof net->secret_key);
        net->failed = true;
        return -1;
    }
    plog_info ("CurveZMQ on: certificate %s (public key %.8s...)%s%.8s%s%.8s%s",
               config->cert_path, net->public_key,
               *net->broker_key ? ", broker key " : "", net->broker_key,
               *net->sink_key ? ", sink key " : "", net->sink_key,
               *net->broker_key || *net->sink_key ? " pinned" : "");
    return 0;
}

const char *proto_port_name (proto_port_t port)
{
    switch (port) {
    case PROTO_PORT_FRONTEND: return "frontend";
    case PROTO_PORT_BACKEND: return "backend";
    case PROTO_PORT_RESULTS: return "results";
    case PROTO_PORT_STATS: return "stats";
    default: return "";
    }
}

bool proto_endpoint_is_local (const char *endpoint)
{
    if (strncmp (endpoint, "ipc://", 6) == 0 || strncmp (endpoint, "inproc://", 9) == 0)
        return true;
    if (strncmp (endpoint, "tcp://", 6) != 0)
        return false;
    //  "tcp://source;host:port" connects from a source address: the host is what counts.
    const char *addr = endpoint + 6;
    const char *semi = strrchr (addr, ';');
    if (semi)
        addr = semi + 1;
    char host[256];
    const char *colon = strrchr (addr, ':');
    size_t n = colon ? (size_t) (colon - addr) : strlen (addr);
    if (n >= sizeof host)
        return false;
    memcpy (host, addr, n);
    host[n] = 0;
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        memmove (host, host + 1, n - 2);
        host[n - 2] = 0;
    }
    if (strcasecmp (host, "localhost") == 0 || streq (host, "lo"))
        return true;
    struct in_addr v4;
    if (inet_pton (AF_INET, host, &v4) == 1)
        return (ntohl (v4.s_addr) >> 24) == 127;
    struct in6_addr v6;
    if (inet_pton (AF_INET6, host, &v6) == 1)
        return IN6_IS_ADDR_LOOPBACK (&v6)
            || (IN6_IS_ADDR_V4MAPPED (&v6) && v6.s6_addr[12] == 127);
    //  "*", 0.0.0.0, a LAN address, an interface, any other host name.
    return false;
}

//  The plain-text policy. Returns -1 when the socket must not be made.
static int s_check_plain (const proto_net_t *net, const char *endpoint, bool bind)
{
    if (proto_endpoint_is_local (endpoint))
        return 0;
    if (!bind) {
        plog_warn ("connecting to %s in plain text: anyone on the network path can read and"
                   " forge this traffic; turn on network.security", endpoint);
        return 0;
    }
    if (!net->insecure) {
        plog_error ("refusing to bind %s in plain text: it can be reached from other machines and"
                    " network.security is off, so anyone who can reach it could make the bot post."
                    " Turn on network.security (README: Workers on other machines), bind a"
                    " loopback address, or set network.insecure=true to accept the risk",
                    endpoint);
        return -1;
    }
    plog_warn ("binding %s in plain text because network.insecure is true: anyone who can reach"
               " it can make the bot post", endpoint);
    return 0;
}

//  Makes `sock` a CURVE server or client for `port`. Returns -1 (logged).
static int s_make_secure (const proto_net_t *net, zsock_t *sock, const char *endpoint, bool bind,
                          proto_port_t port)
{
    const char *domain = proto_port_name (port);
    if (bind) {
        //  A CURVE server without a ZAP handler admits every client.
        if (!proto_auth_running ()) {
            plog_error ("cannot bind %s (%s) securely: the authenticator is not running",
                        endpoint, domain);
            return -1;
        }
        int enforce = 1;
        zmq_setsockopt (zsock_resolve (sock), PROTO_ZAP_ENFORCE_DOMAIN, &enforce, sizeof enforce);
        zsock_set_zap_domain (sock, domain);
        zsock_set_curve_server (sock, 1);
        zsock_set_curve_secretkey (sock, net->secret_key);
        return proto_auth_watch (sock, domain);
    }
    bool to_broker = port == PROTO_PORT_FRONTEND || port == PROTO_PORT_BACKEND;
    const char *server = to_broker ? net->broker_key : net->sink_key;
    if (!*server) {
        plog_error ("cannot connect to %s securely: network.security.%s is not set, so the %s"
                    " cannot be told from an impostor", endpoint,
                    to_broker ? "brokerKey" : "sinkKey", to_broker ? "broker" : "sink");
        return -1;
    }
    zsock_set_curve_serverkey (sock, server);
    zsock_set_curve_publickey (sock, net->public_key);
    zsock_set_curve_secretkey (sock, net->secret_key);
    return 0;
}

zsock_t *proto_sock_prepare (const proto_net_t *net, int type, const char *endpoint, bool bind,
                             const char *identity, proto_port_t port)
{
    if (net->failed) {
        plog_error ("cannot %s %s: the security settings could not be loaded (see above)",
                    bind ? "bind" : "connect to", endpoint);
        return NULL;
    }
    //  CURVE has no meaning on inproc (no handshake there).
    bool secure = net->secure && port != PROTO_PORT_NONE && strncmp (endpoint, "inproc://", 9) != 0;
    if (!secure && s_check_plain (net, endpoint, bind))
        return NULL;
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
        //  (Without handover libzmq ignores a reconnection for good while it
        //  still holds the old one. With security on, proto_sock_admit
        //  refuses a route taken over by another key.)
        zsock_set_router_handover (sock, 1);
        zsock_set_router_mandatory (sock, 1);
    }
    if (identity && (type == ZMQ_DEALER || type == ZMQ_ROUTER))
        zsock_set_identity (sock, identity);
    if (secure && s_make_secure (net, sock, endpoint, bind, port)) {
        zsock_destroy (&sock);
        return NULL;
    }
    return sock;
}

zsock_t *proto_sock_new (const proto_net_t *net, int type, const char *endpoint, bool bind,
                         const char *identity, proto_port_t port)
{
    zsock_t *sock = proto_sock_prepare (net, type, endpoint, bind, identity, port);
    if (!sock)
        return NULL;
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

int proto_sock_admit (zsock_t *sock, const void *route, size_t route_size, zmq_msg_t *body,
                      proto_peer_t *peer, char *why, size_t whylen)
{
    const char *user = zmq_msg_gets (body, "User-Id");
    const char *key = zmq_msg_gets (body, PROTO_AUTH_KEY_PROPERTY);
    if (peer) {
        snprintf (peer->user, sizeof peer->user, "%s", user ? user : "");
        snprintf (peer->key, sizeof peer->key, "%s", key ? key : "");
    }
    //  Only bound secure sockets have a ZAP domain.
    char domain[32];
    size_t size = sizeof domain;
    if (zmq_getsockopt (zsock_resolve (sock), ZMQ_ZAP_DOMAIN, domain, &size) || size <= 1)
        return 0;
    domain[sizeof domain - 1] = 0;
    return proto_auth_check (domain, user, key, zmq_msg_gets (body, "Peer-Address"), route,
                             route_size, why, whylen);
}

int proto_recv (zsock_t *sock, proto_msg_t *msg, proto_peer_t *peer, char *why, size_t whylen)
{
    void *handle = zsock_resolve (sock);
    proto_peer_t scratch;
    if (!peer)
        peer = &scratch;
    peer->route_size = 0;
    peer->user[0] = 0;
    peer->key[0] = 0;
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
    int rc;
    if (proto_sock_admit (sock, peer->route, peer->route_size, &part, peer, why, whylen)) {
        if (zmq_msg_more (&part))
            s_drain_parts (handle);
        rc = PROTO_MALFORMED;
    }
    else if (zmq_msg_more (&part)) {
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
