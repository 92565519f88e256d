/* pk_agent.h: the agent library's public header (DESIGN 2): MeZO optimizer and trainer,
 * objectives, step log and replay, the federated client, and the UI helpers the CLI uses.
 * Each area keeps its declarations in its own sub-header, included here. */
#ifndef PK_AGENT_H
#define PK_AGENT_H

#include "pk_common.h"
#include "pk_ui.h"
#include "pk_mezo.h"
#include "pk_sync.h"

#endif /* PK_AGENT_H */
