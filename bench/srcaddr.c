/* W1-DNSBL: make smtp-source connect from BENCH_SOURCE_ADDR (e.g. 127.0.0.2).
 *
 * smtp-source has no source-address option, and postern's inbound defences
 * skip 127.0.0.1 (rDNS never looks it up). Loaded with LD_PRELOAD into
 * smtp-source only: an unbound IPv4 TCP socket connecting to 127.0.0.0/8 is
 * first bound to BENCH_SOURCE_ADDR, port 0. Nothing else is changed.
 * Built by bench.py: cc -shared -fPIC -O2 -o srcaddr.so srcaddr.c -ldl
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int connect(int fd, const struct sockaddr *to, socklen_t len)
{
    static int (*real_connect)(int, const struct sockaddr *, socklen_t);
    if (!real_connect)
        real_connect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    const char *src = getenv("BENCH_SOURCE_ADDR");
    if (src && to && to->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)
        && (ntohl(((const struct sockaddr_in *)to)->sin_addr.s_addr) >> 24) == 127) {
        struct sockaddr_in me;
        socklen_t melen = sizeof(me);
        int type = 0;
        socklen_t tlen = sizeof(type);
        /* only a TCP socket not bound yet (port 0 after getsockname) */
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 && type == SOCK_STREAM
            && getsockname(fd, (struct sockaddr *)&me, &melen) == 0 && me.sin_port == 0) {
            memset(&me, 0, sizeof(me));
            me.sin_family = AF_INET;
            if (inet_pton(AF_INET, src, &me.sin_addr) == 1)
                bind(fd, (struct sockaddr *)&me, sizeof(me)); /* on failure connect picks as usual */
        }
    }
    return real_connect(fd, to, len);
}
