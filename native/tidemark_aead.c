/*
 * AES-256-GCM for the replication link, through the OpenSSL that Node itself runs on. node:crypto
 * makes a new cipher object (a new OpenSSL context) for every frame; here one context per direction
 * of use is kept and only re-keyed, which is most of the cost for 4 KiB frames. Same contract as
 * src/ports/crypto.ts: 32-byte key, 12-byte nonce, ciphertext followed by a 16-byte tag.
 */
#include <stdint.h>
#include <string.h>
#include <node_api.h>
#include <openssl/evp.h>
#include "tidemark_aead.h"

#define KEY_BYTES 32
#define NONCE_BYTES 12
#define TAG_BYTES 16

/* JS calls run on the main thread only: one context each, made on first use. */
static EVP_CIPHER_CTX *seal_ctx;
static EVP_CIPHER_CTX *open_ctx;

static int bytes_arg(napi_env env, napi_value value, uint8_t **data, size_t *length) {
  napi_typedarray_type type;
  void *p;
  if (napi_get_typedarray_info(env, value, &type, length, &p, NULL, NULL) != napi_ok || type != napi_uint8_array) return 0;
  *data = p;
  return 1;
}

/* (key, nonce, aad, data): checks the four Uint8Arrays and the key and nonce lengths. */
static int aead_args(napi_env env, napi_callback_info info, uint8_t **key, uint8_t **nonce, uint8_t **aad, size_t *aad_len,
                     uint8_t **data, size_t *data_len) {
  size_t argc = 4;
  napi_value argv[4];
  size_t key_len = 0, nonce_len = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4 || !bytes_arg(env, argv[0], key, &key_len) || !bytes_arg(env, argv[1], nonce, &nonce_len) ||
      !bytes_arg(env, argv[2], aad, aad_len) || !bytes_arg(env, argv[3], data, data_len)) {
    napi_throw_type_error(env, NULL, "expected (key, nonce, aad, data) as Uint8Arrays");
    return 0;
  }
  if (key_len != KEY_BYTES || nonce_len != NONCE_BYTES) {
    napi_throw_range_error(env, NULL, "AES-256-GCM needs a 32-byte key and a 12-byte nonce");
    return 0;
  }
  return 1;
}

static EVP_CIPHER_CTX *context(EVP_CIPHER_CTX **slot, int encrypt) {
  if (*slot) return *slot;
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (!ctx) return NULL;
  if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, encrypt) != 1) {
    EVP_CIPHER_CTX_free(ctx);
    return NULL;
  }
  *slot = ctx;
  return ctx;
}

static void drop(EVP_CIPHER_CTX **slot) {
  EVP_CIPHER_CTX_free(*slot);
  *slot = NULL;
}

/* (key, nonce, aad, plaintext) → ciphertext ‖ tag */
static napi_value aead_seal(napi_env env, napi_callback_info info) {
  uint8_t *key, *nonce, *aad, *plain;
  size_t aad_len, plain_len;
  if (!aead_args(env, info, &key, &nonce, &aad, &aad_len, &plain, &plain_len)) return NULL;
  if (plain_len > INT32_MAX - TAG_BYTES || aad_len > INT32_MAX) {
    napi_throw_range_error(env, NULL, "AES-256-GCM input too long");
    return NULL;
  }
  EVP_CIPHER_CTX *ctx = context(&seal_ctx, 1);
  void *out_data;
  napi_value out;
  if (!ctx || napi_create_buffer(env, plain_len + TAG_BYTES, &out_data, &out) != napi_ok) {
    napi_throw_error(env, NULL, "AES-256-GCM: cannot set up the cipher");
    return NULL;
  }
  uint8_t *sealed = out_data;
  int n = 0, tail = 0;
  if (EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) != 1 ||
      (aad_len > 0 && EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1) ||
      (plain_len > 0 && EVP_EncryptUpdate(ctx, sealed, &n, plain, (int)plain_len) != 1) ||
      EVP_EncryptFinal_ex(ctx, sealed + n, &tail) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, sealed + plain_len) != 1) {
    drop(&seal_ctx);
    napi_throw_error(env, NULL, "AES-256-GCM encryption failed");
    return NULL;
  }
  return out;
}

/* (key, nonce, aad, ciphertext ‖ tag) → plaintext, or undefined when the tag does not verify */
static napi_value aead_open(napi_env env, napi_callback_info info) {
  uint8_t *key, *nonce, *aad, *sealed;
  size_t aad_len, sealed_len;
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  if (!aead_args(env, info, &key, &nonce, &aad, &aad_len, &sealed, &sealed_len)) return NULL;
  if (sealed_len < TAG_BYTES) return undefined;
  if (sealed_len > INT32_MAX || aad_len > INT32_MAX) {
    napi_throw_range_error(env, NULL, "AES-256-GCM input too long");
    return NULL;
  }
  size_t plain_len = sealed_len - TAG_BYTES;
  EVP_CIPHER_CTX *ctx = context(&open_ctx, 0);
  void *out_data;
  napi_value out;
  if (!ctx || napi_create_buffer(env, plain_len, &out_data, &out) != napi_ok) {
    napi_throw_error(env, NULL, "AES-256-GCM: cannot set up the cipher");
    return NULL;
  }
  uint8_t tag[TAG_BYTES];
  memcpy(tag, sealed + plain_len, TAG_BYTES);
  int n = 0, tail = 0;
  if (EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) != 1 ||
      (aad_len > 0 && EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1) ||
      (plain_len > 0 && EVP_DecryptUpdate(ctx, out_data, &n, sealed, (int)plain_len) != 1) ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, tag) != 1) {
    drop(&open_ctx);
    napi_throw_error(env, NULL, "AES-256-GCM decryption failed");
    return NULL;
  }
  /* The tag is checked here; a failure leaves nothing usable (the partial plaintext is dropped). */
  if (EVP_DecryptFinal_ex(ctx, (uint8_t *)out_data + n, &tail) != 1) {
    memset(out_data, 0, plain_len);
    return undefined;
  }
  return out;
}

void register_aead(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"aes256GcmSeal", NULL, aead_seal, NULL, NULL, NULL, napi_default, NULL},
    {"aes256GcmOpen", NULL, aead_open, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
