/*
 * routes.h — the downstream HTTP API: OCI Distribution pull routes,
 * /metrics and /healthz, answered on the worker's event loop.
 */
#ifndef SLUICE_ROUTES_H
#define SLUICE_ROUTES_H

struct evhttp_request;

/* evhttp's generic callback; arg is the worker. */
void routes_handle(struct evhttp_request *req, void *arg);
/* Frees process-wide state (the set of blobs verified since start). */
void routes_cleanup(void);

#endif
