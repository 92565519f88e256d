/* client.h: a minimal blocking HTTP/1.1 client over one keep-alive TCP connection, for the load
 * generator and the coordinator tests (they must see dropped connections and truncated bodies
 * as they are, without the retries of a full client). Not the device's client (net/http.c).
 * Thread safety: a pkc_conn is used by one thread at a time. */
#ifndef PK_SRV_CLIENT_H
#define PK_SRV_CLIENT_H

#include "pk_common.h"

#include <stddef.h>

typedef struct pkc_conn pkc_conn;

typedef struct pkc_response {
    int status;            /* HTTP status, 0 if no status line arrived */
    char *head;            /* status line + headers, NUL-terminated (owned) */
    char *body;            /* body bytes + NUL (owned; may contain NULs) */
    size_t body_len;       /* bytes of body received */
    long long content_len; /* Content-Length announced, -1 if none */
    int truncated;         /* 1 if the connection closed before the announced body ended */
    size_t bytes_out;      /* request bytes written (head + body) */
    size_t bytes_in;       /* response bytes read (head + body) */
} pkc_response;

/* sa = host:port, host a numeric IPv4 address (the coordinator binds to one, the client connects
 * to one); 0, or -1 if host is not one. */
struct sockaddr_in;
int pkc_ipv4(const char *host, int port, struct sockaddr_in *sa);

/* Connects to host:port (numeric IPv4) with a timeout for every later read and write. */
PK_NODISCARD pk_status pkc_connect(const char *host, int port, double timeout_s, pkc_conn **out);
void pkc_close(pkc_conn *c); /* NULL-safe */

/* Sends one request and reads the answer. extra_headers ("Name: v\r\n"...) may be NULL; body may
 * be NULL. PK_OK when a complete answer arrived; PK_ERR_HTTP when the connection closed early
 * (resp->status/truncated tell how far it got; reconnect before the next request). resp is
 * filled in either case and must be released with pkc_response_free. HEAD reads no body. */
PK_NODISCARD pk_status pkc_request(pkc_conn *c, const char *method, const char *path,
                                   const char *extra_headers, const void *body, size_t body_len,
                                   pkc_response *resp);
void pkc_response_free(pkc_response *r);

/* Value of a header (case-insensitive name) copied into out; 1 if found, 0 if not. */
int pkc_header(const pkc_response *r, const char *name, char *out, size_t outlen);

#endif /* PK_SRV_CLIENT_H */
