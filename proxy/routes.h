/*
 * routes.h — the downstream HTTP API: OCI Distribution pull routes,
 * /metrics and /healthz, answered on the worker's event loop.
 */
#ifndef SLUICE_ROUTES_H
#define SLUICE_ROUTES_H

struct evhttp_request;
struct worker;

/* evhttp's generic callback; arg is the worker. */
void routes_handle(struct evhttp_request *req, void *arg);
/* Frees process-wide state (the sets of objects verified since start). */
void routes_cleanup(void);
/* A worker's own routes state: made before its loop runs (-1: no memory),
 * freed after its connections are (requests ending later free their own). */
int routes_worker_init(struct worker *w);
void routes_worker_free(struct worker *w);

#endif
