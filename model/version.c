/* model: module version (placeholder file so the library always has a source). */
#include "pk_common.h"

const char *pk_model_version(void);
const char *pk_model_version(void)
{
    return "0.1.0";
}
