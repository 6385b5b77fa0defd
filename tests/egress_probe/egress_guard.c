/* Loaded with LD_PRELOAD into the test run and every process it starts (servers, CLI, parse
 * workers, Chromium): records each connect()/sendto()/sendmsg() to a non-loopback address and each
 * name lookup of a non-loopback name, at the libc level, so native code that Python's audit hook
 * never sees (llama.cpp, onnxruntime, a browser) is watched too. The call still goes ahead: this
 * records, the test fixture fails the test. One line per attempt in $EGRESS_SYSCALL_LOG.
 *
 * A connect() of a UDP socket sends nothing (programs use it to learn which local address routes to
 * a host; Chromium does, to 8.8.8.8): it is recorded only once something is sent on that socket. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static void record(const char *what, const char *where) {
    const char *path = getenv("EGRESS_SYSCALL_LOG");
    if (path == NULL || *path == '\0') return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return;
    char exe[256] = "?";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) exe[n] = '\0';
    char line[768];
    int len = snprintf(line, sizeof line, "%s %s (pid %d, %s)\n", what, where, getpid(), exe);
    if (len > 0) (void)!write(fd, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
    close(fd);
}

static int outside(const struct sockaddr *sa, socklen_t len, char *text, size_t size) {
    if (sa == NULL || len < (socklen_t)sizeof(sa_family_t)) return 0; /* no address: the kernel uses none */
    if (sa->sa_family == AF_INET) {
        if (len < (socklen_t)sizeof(struct sockaddr_in)) return 0; /* the kernel refuses it: EINVAL */
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, text, (socklen_t)size);
        uint32_t a = ntohl(in->sin_addr.s_addr);
        return (a >> 24) != 127 && a != 0;
    }
    if (sa->sa_family == AF_INET6) {
        if (len < (socklen_t)sizeof(struct sockaddr_in6)) return 0;
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, text, (socklen_t)size);
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr)) return 0;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) return in6->sin6_addr.s6_addr[12] != 127;
        return 1;
    }
    return 0; /* unix sockets, netlink, AF_UNSPEC: not the network */
}

static void check(const char *what, const struct sockaddr *sa, socklen_t len) {
    char text[INET6_ADDRSTRLEN] = "?";
    if (outside(sa, len, text, sizeof text)) record(what, text);
}

#define MAX_FD 65536
static volatile unsigned char udp_out[MAX_FD]; /* UDP sockets connected beyond loopback, by fd */

static int is_udp(int fd) {
    int type = 0;
    socklen_t n = sizeof type;
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &n) == 0 && type == SOCK_DGRAM;
}

/* Something is sent on a connected socket: if it is a UDP socket connected beyond loopback, record it. */
static void check_connected(const char *what, int fd) {
    if (fd < 0 || fd >= MAX_FD || !udp_out[fd]) return;
    struct sockaddr_storage peer;
    socklen_t n = sizeof peer;
    char text[INET6_ADDRSTRLEN] = "?";
    if (is_udp(fd) && getpeername(fd, (struct sockaddr *)&peer, &n) == 0 &&
        outside((struct sockaddr *)&peer, n, text, sizeof text))
        record(what, text);
    else
        udp_out[fd] = 0; /* the fd was closed and reused since */
}

int connect(int fd, const struct sockaddr *sa, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (real == NULL) real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    char text[INET6_ADDRSTRLEN] = "?";
    if (outside(sa, len, text, sizeof text)) {
        if (is_udp(fd)) {
            if (fd >= 0 && fd < MAX_FD) udp_out[fd] = 1;
        } else {
            record("connect", text);
        }
    } else if (fd >= 0 && fd < MAX_FD) {
        udp_out[fd] = 0;
    }
    return real(fd, sa, len);
}

ssize_t send(int fd, const void *buf, size_t n, int flags) {
    static ssize_t (*real)(int, const void *, size_t, int);
    if (real == NULL) real = (ssize_t (*)(int, const void *, size_t, int))dlsym(RTLD_NEXT, "send");
    check_connected("send", fd);
    return real(fd, buf, n, flags);
}

int sendmmsg(int fd, struct mmsghdr *msgs, unsigned int count, int flags) {
    static int (*real)(int, struct mmsghdr *, unsigned int, int);
    if (real == NULL) real = (int (*)(int, struct mmsghdr *, unsigned int, int))dlsym(RTLD_NEXT, "sendmmsg");
    for (unsigned int i = 0; msgs != NULL && i < count; i++) {
        if (msgs[i].msg_hdr.msg_name != NULL)
            check("sendmmsg", (const struct sockaddr *)msgs[i].msg_hdr.msg_name, msgs[i].msg_hdr.msg_namelen);
        else
            check_connected("sendmmsg", fd);
    }
    return real(fd, msgs, count, flags);
}

ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *sa, socklen_t len) {
    static ssize_t (*real)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    if (real == NULL)
        real = (ssize_t (*)(int, const void *, size_t, int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "sendto");
    if (sa == NULL) check_connected("sendto", fd); else check("sendto", sa, len);
    return real(fd, buf, n, flags, sa, len);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
    static ssize_t (*real)(int, const struct msghdr *, int);
    if (real == NULL) real = (ssize_t (*)(int, const struct msghdr *, int))dlsym(RTLD_NEXT, "sendmsg");
    if (msg != NULL && msg->msg_name != NULL) check("sendmsg", (const struct sockaddr *)msg->msg_name, msg->msg_namelen);
    else check_connected("sendmsg", fd);
    return real(fd, msg, flags);
}

static int loopback_name(const char *node) {
    if (node == NULL || *node == '\0') return 1;
    if (strcasecmp(node, "localhost") == 0 || strcasecmp(node, "localhost.localdomain") == 0) return 1;
    if (strncmp(node, "127.", 4) == 0 || strcmp(node, "::1") == 0 || strcmp(node, "0.0.0.0") == 0) return 1;
    struct in6_addr a6;
    struct in_addr a4;
    /* another numeric address is no lookup: connect() reports it if it is used */
    return inet_pton(AF_INET, node, &a4) == 1 || inet_pton(AF_INET6, node, &a6) == 1;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res) {
    static int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
    if (real == NULL)
        real = (int (*)(const char *, const char *, const struct addrinfo *, struct addrinfo **))dlsym(
            RTLD_NEXT, "getaddrinfo");
    if (!loopback_name(node)) record("lookup", node);
    return real(node, service, hints, res);
}
