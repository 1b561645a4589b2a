/* A discard SMTP sink for the large-message workloads (bench/common.py builds it:
 * cc -O2 -pthread -o sink sink.c).
 *
 *   sink HOST:PORT N     accept mail on HOST:PORT, exit 0 once N messages were accepted
 *
 * Why not Postfix's smtp-sink there: smtp-sink reads the text through a 4 KiB stream buffer a
 * line at a time; on the 2-core bench machine it takes about 120 one-megabyte messages per
 * second from smtp-source alone, which is less than the systems deliver, so W2 1 MB measured
 * the sink. This one reads 256 KiB at a time and looks for the end of the text with memmem(),
 * a thread per connection (the systems open at most a few dozen). It answers EHLO with
 * PIPELINING and 8BITMIME only (no CHUNKING, no STARTTLS), 250 to MAIL, RCPT, RSET and NOOP,
 * 354 to DATA, 250 after the final dot, 221 to QUIT, 502 to anything else; it keeps nothing.
 * Every system relays to the same sink, so the comparison stays fair.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (256 * 1024)

static long target;
static long accepted;

/* Replies are gathered and written when the commands read so far are answered (before the next
 * read), in one write: a pipelining client (RFC 2920) that sent MAIL, RCPT and DATA together
 * gets the three replies in one segment instead of waiting out Nagle and its own delayed ACK
 * (40 ms) for the second and third. */
struct out {
    char buf[4096];
    size_t len;
};

static int flush_out(int fd, struct out *o)
{
    const char *s = o->buf;
    size_t n = o->len;
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    o->len = 0;
    return 0;
}

static int say(int fd, struct out *o, const char *s)
{
    size_t n = strlen(s);
    if (o->len + n > sizeof o->buf && flush_out(fd, o) < 0)
        return -1;
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    return 0;
}

static void *session(void *arg)
{
    int fd = (int)(long)arg;
    char *buf = malloc(BUF);
    struct out o = {.len = 0};
    size_t len = 0, pos = 0; /* buf[pos..len) not yet consumed */
    int data = 0;            /* in the text: buf[pos-2..pos) is the CRLF before it */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!buf || say(fd, &o, "220 sink ESMTP\r\n") < 0)
        goto out;
    for (;;) {
        if (data) {
            /* buf[pos-2..len) is the CRLF that ended DATA (or kept octets) and the text so far */
            char *end = memmem(buf + pos - 2, len - (pos - 2), "\r\n.\r\n", 5);
            if (end) {
                pos = (size_t)(end - buf) + 5;
                data = 0;
                long n = __atomic_add_fetch(&accepted, 1, __ATOMIC_SEQ_CST);
                if (say(fd, &o, "250 2.0.0 ok\r\n") < 0)
                    goto out;
                if (n >= target) {
                    flush_out(fd, &o);
                    _exit(0);
                }
                continue;
            }
            /* Keep the last octets searched (at most 6, never any from before the text): a
             * terminator may be split across reads. The next search starts at buf[0]. */
            size_t keep = len - pos + 2 < 6 ? len - pos + 2 : 6;
            memmove(buf, buf + len - keep, keep);
            len = keep;
            pos = 2;
        } else {
            char *nl = memchr(buf + pos, '\n', len - pos);
            if (nl) {
                char *line = buf + pos;
                pos = (size_t)(nl - buf) + 1;
                if (!strncasecmp(line, "EHLO", 4)) {
                    if (say(fd, &o, "250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n") < 0)
                        goto out;
                } else if (!strncasecmp(line, "HELO", 4) || !strncasecmp(line, "MAIL", 4) ||
                           !strncasecmp(line, "RCPT", 4) || !strncasecmp(line, "RSET", 4) ||
                           !strncasecmp(line, "NOOP", 4)) {
                    if (say(fd, &o, "250 2.0.0 ok\r\n") < 0)
                        goto out;
                } else if (!strncasecmp(line, "DATA", 4)) {
                    if (say(fd, &o, "354 go ahead\r\n") < 0)
                        goto out;
                    data = 1;
                } else if (!strncasecmp(line, "QUIT", 4)) {
                    if (say(fd, &o, "221 2.0.0 bye\r\n") == 0)
                        flush_out(fd, &o);
                    goto out;
                } else if (say(fd, &o, "502 5.5.2 not here\r\n") < 0) {
                    goto out;
                }
                continue;
            }
            if (len - pos >= 4096)
                goto out; /* a command line this long is not a bench client's */
            memmove(buf, buf + pos, len - pos);
            len -= pos;
            pos = 0;
        }
        if (o.len && flush_out(fd, &o) < 0)
            goto out;
        ssize_t r = read(fd, buf + len, BUF - len);
        if (r <= 0)
            goto out;
        len += (size_t)r;
    }
out:
    close(fd);
    free(buf);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3 || !strchr(argv[1], ':')) {
        fprintf(stderr, "usage: sink HOST:PORT N\n");
        return 2;
    }
    char *colon = strrchr(argv[1], ':');
    *colon = 0;
    target = atol(argv[2]);
    signal(SIGPIPE, SIG_IGN); /* a peer that reset its connection ends that session only */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(colon + 1))};
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "sink: %s is not an IPv4 address\n", argv[1]);
        return 2;
    }
    int one = 1, ls = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 1024) < 0) {
        perror("sink");
        return 1;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) {
            usleep(10000); /* out of descriptors, say: do not spin */
            continue;
        }
        pthread_t t;
        if (pthread_create(&t, &attr, session, (void *)(long)fd) != 0)
            close(fd);
    }
}
