/* metrics.h — the server's counters and gauges, rendered as Prometheus text on GET /metrics. */
#ifndef LP_SRV_METRICS_H
#define LP_SRV_METRICS_H

#include <stdint.h>

#include "srvutil.h"

typedef struct srv_metrics srv_metrics;

srv_metrics *srv_metrics_create(void);
void srv_metrics_free(srv_metrics *m);
/* One finished HTTP exchange (the status that was sent). */
void srv_metrics_request(srv_metrics *m, const char *endpoint, int status);
/* Tokens: prompt tokens admitted, tokens generated (feeds the tokens/s gauge). */
void srv_metrics_tokens(srv_metrics *m, int64_t prompt, int64_t generated);
void srv_metrics_ttft(srv_metrics *m, double seconds);
/* Append the exposition text; queue depth and busy slots are sampled by the caller. */
void srv_metrics_render(srv_metrics *m, srv_buf *out, int queue_depth, int slots_busy, int slots_total);

#endif
