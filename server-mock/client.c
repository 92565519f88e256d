/* client.c: a minimal blocking HTTP/1.1 client (Content-Length bodies only, which is all the
 * coordinator sends) with poll() timeouts; used by the load generator and the tests. */
#include "srv_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEAD_MAX (64 * 1024)
#define BODY_MAX (256 * 1024 * 1024)

struct pkc_conn {
    int fd;
    int timeout_ms;
    char host[64];
};

int pkc_ipv4(const char *host, int port, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

pk_status pkc_connect(const char *host, int port, double timeout_s, pkc_conn **out)
{
    *out = NULL;
    struct sockaddr_in sa;
    if (pkc_ipv4(host, port, &sa) != 0)
        return PK_ERR_ARG;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return PK_ERR_IO;
    struct timeval tv = {(time_t)timeout_s,
                         (suseconds_t)((timeout_s - (double)(time_t)timeout_s) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return PK_ERR_HTTP;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pkc_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return PK_ERR_NOMEM;
    }
    c->fd = fd;
    c->timeout_ms = (int)(timeout_s * 1000.0);
    snprintf(c->host, sizeof c->host, "%s:%d", host, port);
    *out = c;
    return PK_OK;
}

void pkc_close(pkc_conn *c)
{
    if (!c)
        return;
    close(c->fd);
    free(c);
}

static pk_status write_all(pkc_conn *c, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return PK_ERR_HTTP;
        p += n;
        len -= (size_t)n;
    }
    return PK_OK;
}

/* Reads up to cap bytes once the socket is readable; 0 on EOF, -1 on error or timeout. */
static ssize_t read_some(pkc_conn *c, char *buf, size_t cap)
{
    struct pollfd pfd = {c->fd, POLLIN, 0};
    for (;;) {
        int r = poll(&pfd, 1, c->timeout_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        ssize_t n = recv(c->fd, buf, cap, 0);
        if (n < 0 && errno == EINTR)
            continue;
        return n;
    }
}

static long long parse_content_length(const char *head)
{
    pkc_response tmp = {0};
    char v[32];
    tmp.head = (char *)(uintptr_t)head; /* pkc_header only reads */
    if (!pkc_header(&tmp, "Content-Length", v, sizeof v))
        return -1;
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    return (end == v || n < 0) ? -1 : n;
}

/* Reads the head into a growing buffer; leftover body bytes stay in *rest. */
static pk_status read_head(pkc_conn *c, pkc_response *r, char **rest, size_t *rest_len)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf)
        return PK_ERR_NOMEM;
    for (;;) {
        if (len == cap) {
            if (cap >= HEAD_MAX)
                goto fail;
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb)
                goto fail;
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read_some(c, buf + len, cap - len);
        if (n <= 0)
            goto fail;
        len += (size_t)n;
        r->bytes_in += (size_t)n;
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            size_t hl = (size_t)(end - buf) + 4;
            *rest_len = len - hl;
            *rest = malloc(*rest_len + 1);
            if (!*rest)
                goto fail;
            memcpy(*rest, buf + hl, *rest_len);
            buf[hl] = '\0';
            r->head = buf;
            if (sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1)
                r->status = 0;
            return PK_OK;
        }
    }
fail:
    if (len >= 12)
        sscanf(buf, "HTTP/1.%*d %d", &r->status);
    free(buf);
    return PK_ERR_HTTP;
}

static pk_status send_request(pkc_conn *c, const char *method, const char *path, const char *extra,
                              const void *body, size_t body_len, pkc_response *r)
{
    size_t hcap = strlen(path) + (extra ? strlen(extra) : 0) + 256;
    char *h = malloc(hcap);
    if (!h)
        return PK_ERR_NOMEM;
    int hl = snprintf(h, hcap, "%s %s HTTP/1.1\r\nHost: %s\r\n%s%sContent-Length: %zu\r\n\r\n",
                      method, path, c->host, body ? "Content-Type: application/json\r\n" : "",
                      extra ? extra : "", body_len);
    pk_status st = write_all(c, h, (size_t)hl);
    free(h);
    if (st == PK_OK && body_len)
        st = write_all(c, body, body_len);
    r->bytes_out = (size_t)hl + body_len;
    return st;
}

pk_status pkc_request(pkc_conn *c, const char *method, const char *path, const char *extra_headers,
                      const void *body, size_t body_len, pkc_response *r)
{
    char *rest = NULL;
    size_t rest_len = 0;
    memset(r, 0, sizeof *r);
    r->content_len = -1;
    pk_status st = send_request(c, method, path, extra_headers, body, body_len, r);
    if (st == PK_OK)
        st = read_head(c, r, &rest, &rest_len);
    if (st != PK_OK)
        goto out;
    r->content_len = parse_content_length(r->head);
    long long want =
        strcmp(method, "HEAD") == 0 || r->status == 204 || r->status == 304 ? 0 : r->content_len;
    if (want < 0 || want > BODY_MAX) {
        st = PK_ERR_HTTP; /* the coordinator always sends Content-Length */
        goto out;
    }
    r->body = malloc((size_t)want + 1);
    if (!r->body) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    size_t have = rest_len < (size_t)want ? rest_len : (size_t)want;
    memcpy(r->body, rest, have);
    while (have < (size_t)want) {
        ssize_t n = read_some(c, r->body + have, (size_t)want - have);
        if (n <= 0) {
            r->truncated = 1;
            st = PK_ERR_HTTP;
            break;
        }
        have += (size_t)n;
        r->bytes_in += (size_t)n;
    }
    r->body[have] = '\0';
    r->body_len = have;
out:
    free(rest);
    return st;
}

void pkc_response_free(pkc_response *r)
{
    if (!r)
        return;
    free(r->head);
    free(r->body);
    r->head = NULL;
    r->body = NULL;
}

int pkc_header(const pkc_response *r, const char *name, char *out, size_t outlen)
{
    if (!r->head)
        return 0;
    size_t nl = strlen(name);
    const char *p = strstr(r->head, "\r\n");
    while (p && p[2] != '\r' && p[2] != '\0') {
        p += 2;
        const char *eol = strstr(p, "\r\n");
        if (!eol)
            return 0;
        if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t vl = (size_t)(eol - v);
            if (vl >= outlen)
                vl = outlen - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return 1;
        }
        p = eol;
    }
    return 0;
}
