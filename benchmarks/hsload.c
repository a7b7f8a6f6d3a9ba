/*
 * hsload: the load generator of bench_daemon.py, in C, so that on a small
 * machine the generator takes a small share of the CPUs the daemon is
 * measured on (the Python generator costs about a fifth of the server's
 * CPU per handshake).
 *
 *   hsload PORT SECONDS CONCURRENCY REQUEST EXPECT [STATUS]
 *
 * CONCURRENCY connections to 127.0.0.1:PORT at a time, each: connect, send
 * REQUEST (a file holding the handshake's bytes), read the response head
 * (up to CRLF CRLF), close with a reset (SO_LINGER 0: no TIME_WAIT), start
 * another; for SECONDS. The first head must start with STATUS (by default
 * "HTTP/1.1 101 "; "HTTP/1.1 200 " to time plain requests) and contain EXPECT (a broken server must not look fast), else exit status 2.
 * Prints "handshakes N errors M" (a connection that ended without a head
 * is an error).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

struct conn {
    int fd;
    int sent;
    size_t len;
    char head[8192];
};

static struct sockaddr_in address;
static char request[8192];
static size_t requestLength;
static const char *expect;
static const char *status = "HTTP/1.1 101 ";
static int epfd;
static long handshakes, errors;
static int checked;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void start(struct conn *c) {
    struct linger linger = {1, 0};
    struct epoll_event event;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        perror("socket");
        exit(1);
    }
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
    if (connect(c->fd, (struct sockaddr *)&address, sizeof address) < 0 && errno != EINPROGRESS) {
        perror("connect");
        exit(1);
    }
    c->sent = 0;
    c->len = 0;
    event.events = EPOLLOUT;
    event.data.ptr = c;
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &event);
}

static void finish(struct conn *c, int good) {
    close(c->fd);
    if (good)
        handshakes++;
    else
        errors++;
    start(c);
}

static void readable(struct conn *c) {
    ssize_t got = recv(c->fd, c->head + c->len, sizeof c->head - 1 - c->len, 0);
    if (got <= 0) {
        finish(c, 0);
        return;
    }
    c->len += (size_t)got;
    c->head[c->len] = 0;
    if (!strstr(c->head, "\r\n\r\n")) {
        if (c->len >= sizeof c->head - 1)
            finish(c, 0);
        return;
    }
    if (!checked) {
        if (strncmp(c->head, status, strlen(status)) != 0 || !strstr(c->head, expect)) {
            fprintf(stderr, "not the expected %s: %.400s\n", status, c->head);
            exit(2);
        }
        checked = 1;
    }
    finish(c, 1);
}

static void writable(struct conn *c) {
    struct epoll_event event;
    if (send(c->fd, request, requestLength, MSG_NOSIGNAL) != (ssize_t)requestLength) {
        finish(c, 0);
        return;
    }
    c->sent = 1;
    event.events = EPOLLIN;
    event.data.ptr = c;
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &event);
}

int main(int argc, char **argv) {
    struct epoll_event events[256];
    struct conn *conns;
    double deadline;
    int concurrency, i, n;
    FILE *f;

    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: hsload PORT SECONDS CONCURRENCY REQUEST EXPECT [STATUS]\n");
        return 1;
    }
    if (argc == 7)
        status = argv[6];
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons((unsigned short)atoi(argv[1]));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    deadline = now() + atof(argv[2]);
    concurrency = atoi(argv[3]);
    f = fopen(argv[4], "rb");
    if (!f) {
        perror(argv[4]);
        return 1;
    }
    requestLength = fread(request, 1, sizeof request, f);
    fclose(f);
    expect = argv[5];
    epfd = epoll_create1(0);
    conns = calloc((size_t)concurrency, sizeof *conns);
    for (i = 0; i < concurrency; i++)
        start(&conns[i]);
    while (now() < deadline) {
        n = epoll_wait(epfd, events, 256, 100);
        for (i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c->sent) {
                if (events[i].events & (EPOLLERR | EPOLLHUP))
                    finish(c, 0);
                else
                    writable(c);
            } else {
                readable(c);
            }
        }
    }
    printf("handshakes %ld errors %ld\n", handshakes, errors);
    return 0;
}
