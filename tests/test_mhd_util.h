/* test_mhd_util.h: the plumbing that the tests' in-process HTTP servers (libmicrohttpd) share:
 * a JSON reply, gathering a request body across the handler's calls, and a daemon on a free
 * loopback port that answers each whole request through the test's route and frees its body.
 * Header-only (static inline), so a test includes it without a change to its CMake fragment. */
#ifndef PK_TEST_MHD_UTIL_H
#define PK_TEST_MHD_UTIL_H

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* A request body as it arrives; data is NUL-terminated once anything has arrived. */
typedef struct mhd_body {
    char *data;
    size_t len;
} mhd_body;

/* Queues text (copied) as an application/json reply with the given status. */
static inline enum MHD_Result mhd_send_json(struct MHD_Connection *c, unsigned code,
                                            const char *text)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)(uintptr_t)text,
                                                             MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

/* The first part of a handler: on the request's first call it attaches an empty mhd_body to
 * *req, and on each call that brings upload data it appends that data. Either way it returns 1
 * with what the handler must return in *res. It returns 0 once the whole body is in *req, when
 * the handler should answer. */
static inline int mhd_gather_body(void **req, const char *upload, size_t *upload_size,
                                  enum MHD_Result *res)
{
    mhd_body *b = *req;
    if (!b) {
        *req = calloc(1, sizeof *b);
        *res = *req ? MHD_YES : MHD_NO;
        return 1;
    }
    if (!*upload_size)
        return 0;
    char *d = realloc(b->data, b->len + *upload_size + 1);
    if (!d) {
        *res = MHD_NO;
        return 1;
    }
    memcpy(d + b->len, upload, *upload_size);
    b->data = d;
    b->len += *upload_size;
    d[b->len] = '\0';
    *upload_size = 0;
    *res = MHD_YES;
    return 1;
}

/* MHD_OPTION_NOTIFY_COMPLETED callback: frees the mhd_body that mhd_gather_body attached. */
static inline void mhd_free_body(void *cls, struct MHD_Connection *c, void **req,
                                 enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    mhd_body *b = *req;
    if (b)
        free(b->data);
    free(b);
    *req = NULL;
}

/* A test server's answer to one request whose whole body has arrived (user: the server's state). */
typedef enum MHD_Result (*mhd_route)(void *user, struct MHD_Connection *c, const char *url,
                                     const char *method, const mhd_body *body);

/* A route and the state it is called with. */
typedef struct mhd_router {
    mhd_route route;
    void *user;
} mhd_router;

/* The access handler of mhd_start_loopback (cls: the mhd_router): gathers the body, then routes. */
static inline enum MHD_Result mhd_route_handler(void *cls, struct MHD_Connection *c,
                                                const char *url, const char *method,
                                                const char *version, const char *upload,
                                                size_t *upload_size, void **req)
{
    (void)version;
    const mhd_router *r = cls;
    enum MHD_Result res;
    if (mhd_gather_body(req, upload, upload_size, &res))
        return res;
    return r->route(r->user, c, url, method, *req);
}

/* Starts a thread-per-connection daemon on 127.0.0.1 at a port the system picks, answering each
 * request through router (borrowed: it must outlive the daemon) once its body is in, and freeing
 * bodies with mhd_free_body. NULL if it cannot start; *port gets the bound port, or 0 if it
 * cannot be read. */
static inline struct MHD_Daemon *mhd_start_loopback(const mhd_router *router, int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
                         NULL, mhd_route_handler, (void *)(uintptr_t)router, MHD_OPTION_SOCK_ADDR,
                         &a, MHD_OPTION_NOTIFY_COMPLETED, mhd_free_body, NULL, MHD_OPTION_END);
    *port = 0;
    if (d) {
        const union MHD_DaemonInfo *i = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
        *port = i ? i->port : 0;
    }
    return d;
}

#endif
