#ifndef TIDEMARK_AEAD_H
#define TIDEMARK_AEAD_H
#include <node_api.h>
/* Adds aes256GcmSeal and aes256GcmOpen to the addon's exports (native/tidemark_aead.c). */
void register_aead(napi_env env, napi_value exports);
#endif
