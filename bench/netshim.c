/* LD_PRELOAD shim for the bench's peers and load generators (bench/common.py builds it:
 * cc -shared -fPIC -O2 -o netshim.so netshim.c -ldl). Two switches, both off unless set:
 *
 * BENCH_LISTEN_BACKLOG=N (preloaded into OpenSMTPD): listen() gets at least N. OpenSMTPD 6.8
 *   listens with a fixed backlog of 5, so 20 or 100 clients connecting at once overflow the
 *   accept queue and their SYNs are retried after 1 s: that measures the backlog, not the MTA.
 *
 * BENCH_QUIT_SHUTDOWN=1 (preloaded into smtp-source, for every system alike): after a write()
 *   or send() that ends with "QUIT\r\n" on a TCP socket, shutdown(SHUT_WR) (a half-close: the
 *   221 reply can still be read). Exim 4.96 answers QUIT only once the client has closed its
 *   side or 200 ms have passed, which caps a connection-per-message client at 5 messages per
 *   second per connection; a client that half-closes after QUIT gets the 221 at once.
 *   The mail was accepted (250 after the final dot) before QUIT in every case.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int listen(int fd, int backlog)
{
    static int (*real_listen)(int, int);
    if (!real_listen)
        real_listen = (int (*)(int, int))dlsym(RTLD_NEXT, "listen");
    const char *min = getenv("BENCH_LISTEN_BACKLOG");
    if (min) {
        int n = atoi(min);
        if (n > backlog)
            backlog = n;
    }
    return real_listen(fd, backlog);
}

static void quit_shutdown(int fd, const void *buf, ssize_t n)
{
    static const char quit[] = "QUIT\r\n";
    const size_t q = sizeof(quit) - 1;
    int type = 0;
    socklen_t tlen = sizeof(type);
    if (n >= (ssize_t)q && getenv("BENCH_QUIT_SHUTDOWN") && strncasecmp((const char *)buf + n - q, quit, q) == 0
        && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 && type == SOCK_STREAM)
        shutdown(fd, SHUT_WR);
}

ssize_t write(int fd, const void *buf, size_t len)
{
    static ssize_t (*real_write)(int, const void *, size_t);
    if (!real_write)
        real_write = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    ssize_t n = real_write(fd, buf, len);
    if (n > 0 && (size_t)n == len)
        quit_shutdown(fd, buf, n);
    return n;
}

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    static ssize_t (*real_send)(int, const void *, size_t, int);
    if (!real_send)
        real_send = (ssize_t (*)(int, const void *, size_t, int))dlsym(RTLD_NEXT, "send");
    ssize_t n = real_send(fd, buf, len, flags);
    if (n > 0 && (size_t)n == len)
        quit_shutdown(fd, buf, n);
    return n;
}
